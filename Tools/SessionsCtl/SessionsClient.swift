import Contracts
import Foundation
import HTTPClient

/// The public HTTP API, as `sessionsctl` uses it. Every failure is a ``CLIError``.
struct SessionsClient: Sendable {
    let baseURL: String
    let apiKey: String?
    let http = HTTPClient(configuration: .init(poolSize: 2))

    /// Sends a request and returns the response when its status is 2xx.
    func send(
        _ method: String,
        _ path: String,
        query: [(String, String)] = [],
        body: Data? = nil,
        headers: HTTPHeaders = [:],
        bearer: String? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> HTTPResponse {
        var request = HTTPRequest(method: method, url: url(path, query), headers: headers, body: body, timeout: timeout)
        if let token = bearer ?? apiKey { request.headers.add("Authorization", "Bearer \(token)") }
        if body != nil && request.headers["Content-Type"] == nil {
            request.headers.add("Content-Type", "application/json")
        }
        let response: HTTPResponse
        do {
            response = try await http.execute(request)
        } catch let error as HTTPClientError {
            throw unreachable(error)
        }
        guard (200..<300).contains(response.status) else { throw Self.failure(response.status, response.body) }
        return response
    }

    /// Sends a request and decodes its JSON answer.
    func json<Value: Decodable>(
        _ type: Value.Type,
        _ method: String,
        _ path: String,
        query: [(String, String)] = [],
        body: (any Encodable)? = nil,
        bearer: String? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> (value: Value, raw: Data) {
        let encoded = try body.map { try JSONEncoder.sessions.encode($0) }
        let response = try await send(method, path, query: query, body: encoded, bearer: bearer, timeout: timeout)
        do {
            return (try JSONDecoder.sessions.decode(type, from: response.body), response.body)
        } catch {
            throw CLIError(.failed, "the server answered something unexpected: \(error)")
        }
    }

    /// Opens a streamed response (SSE); the head must be 2xx.
    func stream(_ path: String, headers: HTTPHeaders) async throws -> HTTPStreamingResponse {
        var request = HTTPRequest(url: url(path, []), headers: headers, timeout: .seconds(30))
        if let apiKey { request.headers.add("Authorization", "Bearer \(apiKey)") }
        let response: HTTPStreamingResponse
        do {
            response = try await http.stream(request)
        } catch let error as HTTPClientError {
            throw unreachable(error)
        }
        guard response.status == 200 else {
            var body = Data()
            for try await chunk in response.body { body.append(chunk) }
            throw Self.failure(response.status, body)
        }
        return response
    }

    func url(_ path: String, _ query: [(String, String)]) -> String {
        guard !query.isEmpty else { return baseURL + path }
        let allowed = CharacterSet.urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+?"))
        let encoded = query.map { name, value in
            "\(name)=\(value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value)"
        }
        return baseURL + path + "?" + encoded.joined(separator: "&")
    }

    /// A path segment, percent-encoded (externalIds may hold anything); `name` says what it is
    /// when it is empty, which would name another route.
    static func segment(_ text: String, _ name: String) throws -> String {
        guard !text.isEmpty else { throw CLIError(.usage, "\(name) must not be empty") }
        // A path would read these as "here" and "up": encoded, they stay a name.
        if text == "." || text == ".." { return text.replacingOccurrences(of: ".", with: "%2E") }
        return text.addingPercentEncoding(
            withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/"))
        ) ?? text
    }

    private func unreachable(_ error: HTTPClientError) -> CLIError {
        CLIError(.unreachable, "cannot reach \(baseURL): \(error.message)")
    }

    /// The API's `{"error": …}` (or the realtime `{"ok":false,"error":…}`) as a CLI error.
    static func failure(_ status: Int, _ body: Data) -> CLIError {
        struct Failure: Decodable { var error: String?; var message: String? }
        let decoded = try? JSONDecoder().decode(Failure.self, from: body)
        let bare: String =
            switch status {
            case 401: "not authenticated"
            case 403: "not allowed"
            case 404: "not found"
            default: "request failed"
            }
        let message =
            decoded?.error ?? decoded?.message
            ?? (body.isEmpty ? bare : String(decoding: body.prefix(200), as: UTF8.self))
        return CLIError(status: status, message: message)
    }
}
