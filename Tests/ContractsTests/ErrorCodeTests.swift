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

@Suite struct ISO8601Tests {
    @Test(arguments: [0, 1_790_000_000.123, 1_790_000_000.999, 951_782_400.5, -1.5, 4_102_444_799.001])
    func writesMillisecondsInUTCAndReadsThemBack(seconds: Double) throws {
        let date = Date(timeIntervalSince1970: seconds)
        let text = ISO8601.string(from: date)
        #expect(text.count == 24 && text.hasSuffix("Z"))
        #expect(ISO8601.date(from: String(text.prefix(19)) + "Z").map { abs($0.timeIntervalSince(date)) < 1 } == true)
        let parsed = try #require(ISO8601.date(from: text))
        #expect(abs(parsed.timeIntervalSince(date)) < 0.001)
    }

    @Test func writesKnownInstantsExactly() {
        #expect(ISO8601.string(from: Date(timeIntervalSince1970: 1_795_860_000.123)) == "2026-11-28T10:00:00.123Z")
        #expect(ISO8601.string(from: Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00.000Z")
        #expect(ISO8601.string(from: Date(timeIntervalSince1970: -0.5)) == "1969-12-31T23:59:59.500Z")
    }

    @Test func readsOtherISOForms() throws {
        #expect(ISO8601.date(from: "2026-11-28T10:00:00Z") == Date(timeIntervalSince1970: 1_795_860_000))
        #expect(ISO8601.date(from: "2026-11-28T11:00:00.000+01:00") == Date(timeIntervalSince1970: 1_795_860_000))
        // PostgreSQL's to_jsonb forms: offset +00:00, trailing zeros of the fraction dropped.
        #expect(ISO8601.date(from: "2026-11-28T10:00:00.2+00:00") == Date(timeIntervalSince1970: 1_795_860_000.2))
        #expect(ISO8601.date(from: "2026-11-28T10:00:00.25+00:00") == Date(timeIntervalSince1970: 1_795_860_000.25))
        #expect(ISO8601.date(from: "2026-11-28T10:00:00+00:00") == Date(timeIntervalSince1970: 1_795_860_000))
        #expect(
            ISO8601.date(from: "2026-11-28T10:00:00.123456+00:00") == Date(timeIntervalSince1970: 1_795_860_000.123)
        )
        #expect(ISO8601.date(from: "2026-13-28T10:00:00.000Z") == nil)
        #expect(ISO8601.date(from: "yesterday") == nil)
        // A date or time that names no moment is refused, not rolled over into another one.
        for impossible in [
            "2027-02-31T25:61:61Z", "2027-02-29T00:00:00Z", "2027-04-31T00:00:00Z", "2027-01-01T24:00:00Z",
            "2027-01-01T23:59:60Z", "2027-02-31T00:00:00+02:00", "2027-02-30T10:00:00.000Z",
        ] {
            #expect(ISO8601.date(from: impossible) == nil, "\(impossible)")
        }
        // A date alone is its midnight in UTC.
        #expect(ISO8601.date(from: "2026-11-28") == Date(timeIntervalSince1970: 1_795_824_000))
        #expect(ISO8601.date(from: "2027-02-31") == nil)
        #expect(ISO8601.date(from: "1795824000") == nil)
        #expect(ISO8601.date(from: "2028-02-29T00:00:00Z") != nil, "a leap day")
        #expect(ISO8601.date(from: "2000-02-29T23:59:59+02:00") != nil, "a leap day of a 400th year")
    }
}
