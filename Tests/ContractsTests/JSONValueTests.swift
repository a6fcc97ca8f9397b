import Contracts
import Foundation
import Testing

@Suite struct JSONValueTests {
    func decoded(_ literal: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(literal.utf8))
    }

    /// Every number a Double holds exactly is a `.number`, which fields such as `expiresAt` and
    /// `lastSeqNum` take; 1 in 20 epoch-millisecond dates used to come out as a `.decimal`.
    @Test func numbersADoubleHoldsAreNumbers() throws {
        var generator = SystemRandomNumberGenerator()
        let wholes = (0..<2000).map { _ in Int64.random(in: -(1 << 53)...(1 << 53), using: &generator) }
        for whole in wholes + [0, 1, -1, 1_234_567_891, 2_147_483_646_999_999, 1_796_024_125_239] {
            #expect(try decoded(String(whole)) == .number(Double(whole)), "\(whole)")
        }
        let fractions = (0..<2000).map { _ in Double.random(in: -1e9...1e9, using: &generator) }
        for fraction in fractions + [0.1, 0.30000000000000004, 1e-7, 3.14159, 12_345_678_901.5] {
            #expect(try decoded(fraction.description) == .number(fraction), "\(fraction)")
        }
    }

    @Test func numbersADoubleWouldChangeAreKeptAsWritten() throws {
        for literal in ["9007199254740993", "123456789012345678901234567890123456789", "0.10000000000000000001"] {
            let value = try decoded(literal)
            guard case .decimal = value else {
                Issue.record("\(literal) became \(value)")
                continue
            }
            #expect(String(decoding: try JSONEncoder().encode(value), as: UTF8.self) == literal)
        }
    }
}

@Suite struct JSONStringTests {
    @Test(arguments: [
        "plain", "", "quote \" back\\slash /", "line\nbreak\ttab\r\u{08}\u{0C}\u{01}\u{1F}\u{7F}", "ünïcødé 🚀 \u{2028}",
    ])
    func handWrittenLiteralsAreWhatJSONEncoderWrites(text: String) throws {
        #expect(JSONString.quoted(text) == String(decoding: try JSONEncoder.sessions.encode(text), as: UTF8.self))
        #expect(try JSONDecoder().decode(String.self, from: Data(JSONString.quoted(text).utf8)) == text)
    }
}
