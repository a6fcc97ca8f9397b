import Foundation
import ServiceKit
import Testing

@Suite struct IdentifierTests {
    @Test func idsAreTwentyFiveBase36CharactersInTimeOrder() {
        let early = Identifier.make(now: Date(timeIntervalSince1970: 1_700_000_000))
        let late = Identifier.make(now: Date(timeIntervalSince1970: 1_700_000_000.002))
        for id in [early, late] {
            #expect(id.count == 25 && id.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber) }, "\(id)")
        }
        #expect(early < late)
        #expect(Set((0..<1000).map { _ in Identifier.make() }).count == 1000)
    }

    @Test func secretsUseEveryBase62CharacterEvenly() {
        #expect(Identifier.secret(length: 0).isEmpty)
        #expect(Identifier.secret(length: 37).count == 37)
        // 62,000 characters: each of the 62 expected 1,000 times; a character that came far less
        // or far more often (a digit lost or favoured when a draw is split) shows here.
        var counts: [Character: Int] = [:]
        var sameAsBefore = 0
        for _ in 0..<1000 {
            let secret = Array(Identifier.secret(length: 62))
            for character in secret { counts[character, default: 0] += 1 }
            sameAsBefore += zip(secret, secret.dropFirst()).filter { $0 == $1 }.count
        }
        #expect(counts.count == 62)
        #expect(counts.values.allSatisfy { (800...1200).contains($0) }, "\(counts.sorted { $0.value < $1.value })")
        // Characters of one draw are independent: 61,000 neighbours agree about 1 in 62 times
        // (984 expected), not the more a digit taken twice from one draw would make.
        #expect((700...1300).contains(sameAsBefore), "\(sameAsBefore) neighbours alike")
    }

    @Test func uuidsAreVersionFourAndParseAsUUIDs() throws {
        let ids = (0..<1000).map { _ in Identifier.uuid() }
        #expect(Set(ids).count == 1000)
        for id in ids.prefix(100) {
            let parsed = try #require(UUID(uuidString: id), "\(id)")
            #expect(parsed.uuidString.lowercased() == id)
            let parts = id.split(separator: "-")
            #expect(parts.map(\.count) == [8, 4, 4, 4, 12])
            #expect(parts[2].first == "4", "version 4: \(id)")
            #expect("89ab".contains(parts[3].first!), "variant 1: \(id)")
        }
    }
}
