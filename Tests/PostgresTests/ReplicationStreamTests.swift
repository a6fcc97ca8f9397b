import Foundation
import Postgres
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct ReplicationStreamTests {
    @Test func readsAnInsertAndAdvancesTheSlotWhenAcknowledged() async throws {
        try await withSlot { client, name in
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
                let messages = try await stream.next(timeout: .seconds(5))
                if messages.isEmpty {
                    Issue.record("no replication message within 5 s; saw \(kinds)")
                    break
                }
                for case .data(_, let walEnd, let payload) in messages {
                    let kind = Character(UnicodeScalar(payload[0]))
                    kinds.append(kind)
                    if kind == "I" { insertPayload = payload }
                    if kind == "C" { commitEnd = walEnd }
                }
            }
            #expect(kinds.filter { $0 != "R" } == ["B", "I", "C"] && kinds.dropFirst().first == "R", "\(kinds)")
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
        }
    }

    /// What is there comes in one call, up to the limit, in order: the replicator reads a busy
    /// stream without a thread hop per message.
    @Test func readsWhatHasArrivedInOneCallUpToTheLimit() async throws {
        try await withSlot { client, name in
            // Committed before the stream starts, so the server sends them together.
            for index in 0..<5 {
                try await client.query("INSERT INTO \(identifier: name) VALUES (\("run-\(index)"), \("QUEUED"))")
            }
            let written = try await client.query("SELECT pg_current_wal_insert_lsn()::text AS lsn")[0]
                .decode("lsn", as: String.self)
            let stream = try await PostgresReplicationStream.start(
                url: try TestServers.databaseURL,
                slot: name,
                publication: name
            )
            // Read only once the server has sent past them, so they wait on the socket together.
            let sent = try await TestServers.waitUntil {
                try await !client.query(
                    """
                    SELECT 1 FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid
                    WHERE s.slot_name = \(name) AND r.sent_lsn >= \(written)::pg_lsn
                    """
                ).isEmpty
            }
            #expect(sent, "the server never sent past \(written)")
            var counts: [Int] = []
            var kinds: [Character] = []
            while kinds.filter({ $0 == "C" }).count < 5 {
                let messages = try await stream.next(timeout: .seconds(5), limit: 4)
                if messages.isEmpty {
                    Issue.record("no replication message within 5 s; saw \(kinds)")
                    break
                }
                counts.append(messages.count)
                for case .data(_, _, let payload) in messages { kinds.append(Character(UnicodeScalar(payload[0]))) }
            }
            // pgoutput describes the table (R) before its first row, and again whenever its cache
            // of the table was invalidated (another test's DDL can do that).
            #expect(kinds.first(where: { $0 != "B" }) == "R")
            #expect(kinds.filter { $0 != "R" } == Array(repeating: ["B", "I", "C"], count: 5).flatMap { $0 })
            #expect(counts.allSatisfy { $0 <= 4 }, "a call returned more than its limit: \(counts)")
            #expect(counts.contains(4), "no call returned several messages: \(counts)")
            await stream.close()
        }
    }

    /// A table, a publication and a slot of one name for `body`, dropped afterwards.
    private func withSlot(_ body: (PostgresClient, String) async throws -> Void) async throws {
        let client = try makeClient()
        let name = TestServers.uniqueName("repl")
        try await client.query("CREATE TABLE \(identifier: name) (id text PRIMARY KEY, status text)")
        try await client.query("ALTER TABLE \(identifier: name) REPLICA IDENTITY FULL")
        try await client.query("CREATE PUBLICATION \(identifier: name) FOR TABLE \(identifier: name)")
        try await client.query("SELECT pg_create_logical_replication_slot(\(name), 'pgoutput')")
        do {
            try await body(client, name)
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
