import Contracts
import Foundation
import HTTPClient
import Hummingbird
import HummingbirdTesting
import ServiceKit
import Synchronization
import Testing

@testable import Realtime

/// S2's account API (`POST /access-tokens`) cannot be reached from here: these tests run
/// against a mock of it that records what it is asked.
@Suite struct S2DirectWritesWithMockS2AccountAPITests {
    @Test func mintsAChannelScopedTokenOnceAndReusesIt() async throws {
        let requests = Mutex<[(body: Data, authorization: String)]>([])
        let router = Router()
        router.post("v1/access-tokens") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 65536)
            let authorization = request.headers[.authorization] ?? ""
            let count = requests.withLock { requests in
                requests.append((Data(body.readableBytesView), authorization))
                return requests.count
            }
            return Response(
                status: .created,
                headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: #"{"access_token":"scoped-\#(count)"}"#))
            )
        }
        try await Application(router: router).test(.live) { client in
            let issuer = S2DirectWrites(
                settings: .init(
                    accountEndpoint: "http://127.0.0.1:\(client.port!)/v1",
                    endpoint: "https://basin.b.s2.dev/v1",
                    basin: "basin",
                    rootToken: "root",
                    skipAccessTokens: false,
                    lifetime: .seconds(3600)
                ),
                http: HTTPClient(),
                streamName: { "env/\($0.environmentId)/sessions/\($0.friendlyId)/\($0.io.rawValue)" }
            )
            let channel = ChannelAddress(environmentId: "e1", friendlyId: "session_a", io: .out)
            let issued = try await issuer.credentials(for: channel, writer: .secretKey)
            #expect(
                issued
                    == DirectWriteCredentials(
                        token: "scoped-1",
                        streamName: "env/e1/sessions/session_a/out",
                        endpoint: "https://basin.b.s2.dev/v1"
                    )
            )
            #expect(try await issuer.credentials(for: channel, writer: .secretKey).token == "scoped-1", "cached")
            #expect(
                try await issuer.credentials(
                    for: .init(environmentId: "e1", friendlyId: "session_a", io: .in),
                    writer: .secretKey
                ).token
                    == "scoped-2"
            )
            let asked = requests.withLock { $0 }
            #expect(asked.count == 2)
            #expect(asked.first?.authorization == "Bearer root")
            let first = try #require(try JSONSerialization.jsonObject(with: asked[0].body) as? [String: Any])
            let scope = try #require(first["scope"] as? [String: Any])
            #expect(scope["streams"] as? [String: String] == ["exact": "env/e1/sessions/session_a/out"])
            #expect(scope["basins"] as? [String: String] == ["exact": "basin"])
            #expect(Set(scope["ops"] as? [String] ?? []) == ["append", "read", "check-tail"])
            #expect((first["expires_at"] as? String)?.hasSuffix("Z") == true)
        }
    }

    @Test func handsOutTheRootTokenWhenTheServerHasNoTokenAPI() async throws {
        let issuer = S2DirectWrites(
            settings: .init(
                accountEndpoint: "http://127.0.0.1:9/v1",
                endpoint: "http://s2-lite:8080/v1",
                basin: "b",
                rootToken: "root",
                skipAccessTokens: true,
                lifetime: .seconds(60)
            ),
            http: HTTPClient(),
            streamName: { "sessions/\($0.friendlyId)/\($0.io.rawValue)" }
        )
        let credentials = try await issuer.credentials(
            for: .init(environmentId: "e", friendlyId: "session_b", io: .in),
            writer: .secretKey
        )
        #expect(credentials.token == "root" && credentials.streamName == "sessions/session_b/in")
    }

    @Test func s2ConfigurationNamesWhatIsMissing() throws {
        #expect(throws: (any Error).self) {
            try RealtimeConfiguration(environment: .init(["SESSIONS_STREAM_STORE": "s2"]))
        }
        let configuration = try RealtimeConfiguration(
            environment: .init([
                "SESSIONS_STREAM_STORE": "s2", "SESSIONS_S2_ENDPOINT": "https://b.b.s2.dev/v1",
                "SESSIONS_S2_ACCESS_TOKEN": "t",
            ])
        )
        #expect(configuration.s2?.accountEndpoint == "https://aws.s2.dev/v1")
        #expect(configuration.s2?.skipAccessTokens == false)
        #expect(try RealtimeConfiguration(environment: .init([:])).s2 == nil)
    }
}
