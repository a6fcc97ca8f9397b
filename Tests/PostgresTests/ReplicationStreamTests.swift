import Foundation
import Postgres
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct ReplicationStreamTests {
    @Test func readsAnInsertAndAdvancesTheSlotWhenAcknowledged() async throws {
        let client = try makeClient()
        let name = TestServers.uniqueName("repl")
        try await client.query("CREATE TABLE \(identifier: name) (id text PRIMARY KEY, status text)")
        try await client.query("ALTER TABLE \(identifier: name) REPLICA IDENTITY FULL")
        try await client.query("CREATE PUBLICATION \(identifier: name) FOR TABLE \(identifier: name)")
        try await client.query("SELECT pg_create_logical_replication_slot(\(name), 'pgoutput')")
        do {
            let stream = try await PostgresReplicationStream.start(
                url: try TestServers.databaseURL,
                slot: name,
                publication: name
            )
            try await client.query("INSERT INTO \(identifier: name) VALUES (\("run-1"), \("QUEUED"))")

            var kinds: [Character] = []
            var insertPayload: [UInt8] = []
            var commitEnd = LSN.zero
            while !kinds.contains("C") {
                guard let message = try await stream.next(timeout: .seconds(5)) else {
                    Issue.record("no replication message within 5 s; saw \(kinds)")
                    break
                }
                guard case .data(_, let walEnd, let payload) = message else { continue }
                let kind = Character(UnicodeScalar(payload[0]))
                kinds.append(kind)
                if kind == "I" { insertPayload = payload }
                if kind == "C" { commitEnd = walEnd }
            }
            #expect(kinds == ["B", "R", "I", "C"])
            let text = String(decoding: insertPayload, as: UTF8.self)
            #expect(text.contains("run-1") && text.contains("QUEUED"))

            try await stream.sendStatus(flushed: commitEnd)
            let advanced = try await TestServers.waitUntil {
                let row = try await client.query(
                    "SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = \(name)"
                )[0]
                return LSN(try row.decode("lsn", as: String.self)).map { $0 >= commitEnd } ?? false
            }
            #expect(advanced, "confirmed_flush_lsn never reached \(commitEnd)")
            await stream.close()
        } catch {
            Issue.record(error)
        }
        _ = try await TestServers.waitUntil {
            try await client.query(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = \(name) AND NOT active"
            )
            .count == 1
        }
        try await client.query("DROP PUBLICATION \(identifier: name)")
        try await client.query("DROP TABLE \(identifier: name)")
        await client.close()
    }

    @Test func refusesUnsafeNames() async throws {
        await #expect(throws: PostgresError.self) {
            _ = try await PostgresReplicationStream.start(
                url: try TestServers.databaseURL,
                slot: "x'; DROP",
                publication: "p"
            )
        }
    }

    @Test func lsnParsesAndPrints() {
        #expect(LSN("0/156F9E8")?.rawValue == 0x156F9E8)
        #expect(LSN("1/0")?.description == "1/0")
        #expect(LSN("nonsense") == nil)
    }
}
