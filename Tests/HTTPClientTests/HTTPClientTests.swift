import ClickHouse
import Foundation
import HTTPClient
import TestSupport
import Testing

@Suite(.timeLimit(.minutes(1))) struct ClickHouseOverCurlTests {
    func makeClickHouse() throws -> (ClickHouseClient, HTTPClient) {
        let http = HTTPClient(configuration: .init(poolSize: 4))
        return (ClickHouseClient(configuration: .init(url: try TestServers.clickhouseURL), http: http), http)
    }

    struct Row: Decodable, Equatable {
        var id: String
        var tags: [String]
        var version: UInt64
    }

    @Test func createInsertAndSelectWithParameters() async throws {
        let (clickhouse, http) = try makeClickHouse()
        try await clickhouse.ping()
        let table = TestServers.uniqueName("t")
        try await clickhouse.execute(
            """
            CREATE TABLE \(table) (id String, tags Array(String), created_at DateTime64(3), version UInt64)
            ENGINE = ReplacingMergeTree(version) ORDER BY id
            """
        )
        let rows = """
            {"id":"s1","tags":["a","b"],"created_at":"2026-11-28 10:00:00.123","version":1}
            {"id":"s1","tags":["a","c"],"created_at":"2026-11-28 10:00:00.123","version":2}
            {"id":"s2","tags":["b"],"created_at":"2026-11-28 10:00:01.000","version":1}

            """
        try await clickhouse.execute("INSERT INTO \(table) FORMAT JSONEachRow", data: Data(rows.utf8))
        let tagged = try await clickhouse.query(
            "SELECT id, tags, version FROM \(table) FINAL WHERE has(tags, {tag:String}) ORDER BY id",
            parameters: ["tag": "a"],
            as: Row.self
        )
        #expect(tagged == [Row(id: "s1", tags: ["a", "c"], version: 2)])
        let named = try await clickhouse.execute(
            "SELECT id FROM \(table) FINAL WHERE id IN {ids:Array(String)} ORDER BY id FORMAT JSONCompactEachRowWithNames",
            parameters: ["ids": .strings(["s1", "s2"])]
        )
        #expect(String(decoding: named, as: UTF8.self) == "[\"id\"]\n[\"s1\"]\n[\"s2\"]\n")
        struct Echo: Decodable { var value: String }
        let awkward = "back\\slash\ttab\nnewline 'quote' ünï"
        let echoed = try await clickhouse.query(
            "SELECT {v:String} AS value",
            parameters: ["v": .text(awkward)],
            as: Echo.self
        )
        #expect(echoed.first?.value == awkward)
        struct Echoes: Decodable { var values: [String] }
        let strings = [awkward, "o'neil", "back\\slash", "\\'", "crlf\r\n", "]", "", "nul\u{0}", "end\\"]
        let arrays = try await clickhouse.query(
            "SELECT {v:Array(String)} AS values",
            parameters: ["v": .strings(strings)],
            as: Echoes.self
        )
        #expect(arrays.first?.values == strings)
        try await clickhouse.execute("DROP TABLE \(table)")
        await http.close()
    }

    @Test func errorsCarryTheExceptionCode() async throws {
        let (clickhouse, http) = try makeClickHouse()
        await #expect(throws: ClickHouseError.self) {
            do {
                try await clickhouse.execute("SELEC 1")
            } catch let error as ClickHouseError {
                #expect(error.exceptionCode == 62)
                #expect((400..<500).contains(error.status))
                #expect(!error.isRetriable)
                throw error
            }
        }
        await #expect(throws: ClickHouseError.self) {
            do {
                try await clickhouse.execute("SELECT * FROM \(TestServers.uniqueName("missing"))")
            } catch let error as ClickHouseError {
                #expect(error.exceptionCode == 60)
                throw error
            }
        }
        await http.close()
    }

    @Test func streamedResponsesArriveInChunks() async throws {
        let http = HTTPClient()
        let query = "SELECT number FROM numbers(200000) FORMAT TabSeparated"
        let response = try await http.stream(
            HTTPRequest(method: "POST", url: try TestServers.clickhouseURL + "/", body: Data(query.utf8))
        )
        #expect(response.status == 200)
        var bytes = Data()
        var chunks = 0
        for try await chunk in response.body {
            bytes.append(chunk)
            chunks += 1
        }
        let numbers = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        #expect(numbers.count == 200_000)
        #expect(numbers.last == "199999")
        #expect(chunks > 1)
        await http.close()
    }

    @Test func stoppingAStreamEarlyAbortsTheTransfer() async throws {
        let http = HTTPClient()
        let query = "SELECT number FROM numbers(5000000) FORMAT TabSeparated"
        let response = try await http.stream(
            HTTPRequest(method: "POST", url: try TestServers.clickhouseURL + "/", body: Data(query.utf8))
        )
        var received = 0
        for try await chunk in response.body {
            received += chunk.count
            break
        }
        #expect(received > 0)
        // The pooled client still works afterwards.
        let (clickhouse, pooled) = try makeClickHouse()
        try await clickhouse.ping()
        await pooled.close()
        await http.close()
    }

    @Test func connectionsAreReusedAcrossRequests() async throws {
        let http = HTTPClient(configuration: .init(poolSize: 1))
        let url = try TestServers.clickhouseURL + "/ping"
        let first = try await http.execute(HTTPRequest(url: url))
        #expect(first.status == 200 && !first.connectionReused)
        for _ in 0..<20 {
            let next = try await http.execute(HTTPRequest(url: url))
            #expect(next.status == 200)
            #expect(next.connectionReused)
        }
        await http.close()
    }

    @Test func aSlowResponseTimesOut() async throws {
        let http = HTTPClient()
        let start = ContinuousClock.now
        await #expect(throws: HTTPClientError.self) {
            do {
                _ = try await http.execute(
                    HTTPRequest(
                        method: "POST",
                        url: try TestServers.clickhouseURL + "/",
                        body: Data("SELECT sleep(2)".utf8),
                        timeout: .milliseconds(300)
                    )
                )
            } catch let error as HTTPClientError {
                #expect(error.code == .timeout)
                #expect(error.isRetriable)
                throw error
            }
        }
        #expect(ContinuousClock.now - start < .seconds(2))
        // The handle that timed out is reused cleanly.
        #expect(try await http.execute(HTTPRequest(url: try TestServers.clickhouseURL + "/ping")).status == 200)
        await http.close()
    }

    @Test func unreachableServerIsARetriableConnectionError() async throws {
        let http = HTTPClient()
        let port = try TestServers.freePort()
        await #expect(throws: HTTPClientError.self) {
            do {
                _ = try await http.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/ping"))
            } catch let error as HTTPClientError {
                #expect(error.code == .connectionFailed)
                #expect(error.isRetriable)
                #expect(error.curlCode == 7)
                throw error
            }
        }
        await http.close()
    }
}
