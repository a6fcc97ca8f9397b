import Contracts
import Foundation
import Testing

@Suite struct ErrorCodeTests {
    @Test(arguments: [400, 401, 403, 404, 405, 409, 413, 429, 500, 503])
    func statusRoundTrips(status: Int) {
        #expect(ErrorCode(status: status).status == status)
    }

    @Test func unknownStatusIsInternal() {
        #expect(ErrorCode(status: 418) == .internalError)
        #expect(ErrorCode(rawValue: "something_new").status == 500)
    }

    @Test func unknownCodesStillDecode() throws {
        let decoded = try JSONDecoder().decode([ErrorCode].self, from: Data(#"["conflict","from_the_future"]"#.utf8))
        #expect(decoded == [.conflict, ErrorCode(rawValue: "from_the_future")])
    }
}

@Suite struct ServiceDiscoveryTests {
    @Test func subjectsTargetAllKindAndInstance() {
        #expect(
            ServiceDiscovery.subjects(for: .ping, name: "realtime", id: "abc")
                == ["$SRV.PING", "$SRV.PING.realtime", "$SRV.PING.realtime.abc"]
        )
    }

    @Test func statsUseSnakeCaseAndAverage() throws {
        let stats = ServiceDiscovery.EndpointStats(
            name: "resolve",
            subject: "sessions.resolve",
            queueGroup: "q",
            numRequests: 4,
            numErrors: 1,
            lastError: "404:not found",
            processingTime: 400
        )
        let json = try #require(String(data: JSONEncoder().encode(stats), encoding: .utf8))
        for key in [
            "queue_group", "num_requests", "num_errors", "last_error", "processing_time", "average_processing_time",
        ] {
            #expect(json.contains("\"\(key)\""), "missing \(key) in \(json)")
        }
        #expect(stats.averageProcessingTime == 100)
    }

    @Test func responsesCarryTheirType() {
        #expect(
            ServiceDiscovery.Ping(name: "a", id: "b", version: "1.0.0", metadata: [:]).type
                == "io.nats.micro.v1.ping_response"
        )
    }
}
