internal import CCurl
import ConnectionPool
import Foundation
import Synchronization

/// One libcurl easy handle. It keeps its connections open between requests, which is where
/// connection reuse comes from.
///
/// `@unchecked Sendable`: an easy handle must not be used from two threads at once; the pool
/// leases it to one task, which performs one request at a time on the pool's threads.
final class CurlHandle: PooledConnection, @unchecked Sendable {
    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_ALL)) }()

    let handle: UnsafeMutableRawPointer

    init() throws {
        _ = Self.globalInit
        guard let handle = curl_easy_init() else {
            throw HTTPClientError(.invalidRequest, curlCode: -1, message: "libcurl could not allocate a handle")
        }
        self.handle = handle
    }

    deinit { curl_easy_cleanup(handle) }

    /// An easy handle stays usable after a failed transfer; curl drops the broken connection itself.
    var isBroken: Bool { false }

    /// Performs `request` (blocking), passing the response head and body chunks to `receiver`.
    func perform(_ request: HTTPRequest, streamingHeadTimeoutOnly: Bool = false, receiver: ResponseReceiver) throws {
        curl_easy_reset(handle)
        var headerList: UnsafeMutablePointer<curl_slist>?
        defer { curl_slist_free_all(headerList) }
        for field in request.headers {
            headerList = curl_slist_append(headerList, "\(field.name): \(field.value)")
        }
        if request.body != nil && request.headers["Expect"] == nil {
            headerList = curl_slist_append(headerList, "Expect:")
        }
        let context = Unmanaged.passUnretained(receiver).toOpaque()
        var status = sessions_curl_set_string(handle, CURLOPT_URL, request.url)
        let method = request.method.uppercased()
        if method == "HEAD" {
            status = status.or(sessions_curl_set_long(handle, CURLOPT_NOBODY, 1))
        } else if method != "GET" || request.body != nil {
            status = status.or(sessions_curl_set_string(handle, CURLOPT_CUSTOMREQUEST, method))
        }
        status = status.or(sessions_curl_set_long(handle, CURLOPT_NOSIGNAL, 1))
        status = status.or(
            sessions_curl_set_long(handle, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeout.milliseconds)
        )
        if !streamingHeadTimeoutOnly {
            status = status.or(sessions_curl_set_long(handle, CURLOPT_TIMEOUT_MS, request.timeout.milliseconds))
        }
        status = status.or(sessions_curl_set_headers(handle, headerList))
        status = status.or(sessions_curl_set_header_callback(handle, curlHeaderCallback))
        status = status.or(sessions_curl_set_pointer(handle, CURLOPT_HEADERDATA, context))
        status = status.or(sessions_curl_set_write_callback(handle, curlWriteCallback))
        status = status.or(sessions_curl_set_pointer(handle, CURLOPT_WRITEDATA, context))
        status = status.or(sessions_curl_set_long(handle, CURLOPT_NOPROGRESS, 0))
        status = status.or(sessions_curl_set_progress_callback(handle, curlProgressCallback))
        status = status.or(sessions_curl_set_pointer(handle, CURLOPT_XFERINFODATA, context))
        guard status == CURLE_OK else { throw Self.error(status) }

        let result = (request.body ?? Data()).withUnsafeBytes { body -> CURLcode in
            if request.body != nil {
                let pointer = UnsafeMutableRawPointer(mutating: body.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!)
                _ = sessions_curl_set_pointer(handle, CURLOPT_POSTFIELDS, pointer)
                _ = sessions_curl_set_post_size(handle, curl_off_t(body.count))
            }
            return curl_easy_perform(handle)
        }
        if result != CURLE_OK {
            if receiver.isCancelled {
                throw HTTPClientError(.cancelled, curlCode: Int32(result.rawValue), message: "cancelled")
            }
            throw Self.error(result)
        }
        var code = 0
        var newConnections = 0
        _ = sessions_curl_get_long(handle, CURLINFO_RESPONSE_CODE, &code)
        _ = sessions_curl_get_long(handle, CURLINFO_NUM_CONNECTS, &newConnections)
        receiver.finish(status: code, newConnections: newConnections)
    }

    static func error(_ code: CURLcode) -> HTTPClientError {
        let message = String(cString: curl_easy_strerror(code))
        let kind: HTTPClientError.Code =
            switch code {
            case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST: .connectionFailed
            case CURLE_OPERATION_TIMEDOUT: .timeout
            case CURLE_SEND_ERROR, CURLE_RECV_ERROR, CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE: .transferFailed
            default: .invalidRequest
            }
        return HTTPClientError(kind, curlCode: Int32(code.rawValue), message: message)
    }
}

extension CURLcode {
    fileprivate func or(_ next: CURLcode) -> CURLcode { self == CURLE_OK ? next : self }
}

extension Duration {
    var milliseconds: Int {
        Int(components.seconds) * 1000 + Int(components.attoseconds / 1_000_000_000_000_000)
    }
}

/// Collects a response as libcurl delivers it, on the transfer's thread.
///
/// `@unchecked Sendable`: the head and body are written only by the transfer's thread; the
/// cancellation flag, read by curl's progress callback, is atomic.
class ResponseReceiver: @unchecked Sendable {
    private(set) var status = 0
    private(set) var headers = HTTPHeaders()
    private(set) var headComplete = false
    private(set) var newConnections = 0
    private let cancelled = Atomic<Bool>(false)

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
    func cancel() { cancelled.store(true, ordering: .relaxed) }

    /// One header line, including the status line and the blank line that ends a header block.
    func receiveHeaderLine(_ line: String) {
        let trimmed = line.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("HTTP/") {
            // A new header block: an interim 1xx response comes before the final one.
            status = Int(trimmed.split(separator: " ").dropFirst().first ?? "") ?? 0
            headers = HTTPHeaders()
            headComplete = false
        } else if trimmed.isEmpty {
            if !(100..<200).contains(status) {
                headComplete = true
                receiveHead()
            }
        } else if let colon = trimmed.firstIndex(of: ":") {
            headers.add(
                String(trimmed[..<colon]),
                String(trimmed[trimmed.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
            )
        }
    }

    /// Called once the final response head is complete.
    func receiveHead() {}

    /// A body chunk; return false to abort the transfer.
    func receiveBody(_ chunk: Data) -> Bool { true }

    /// The transfer ended successfully with `status`, having opened `newConnections` connections.
    func finish(status: Int, newConnections: Int) {
        self.status = status
        self.newConnections = newConnections
    }
}

/// Buffers the whole body.
final class BufferingReceiver: ResponseReceiver, @unchecked Sendable {
    private(set) var body = Data()

    override func receiveBody(_ chunk: Data) -> Bool {
        body.append(chunk)
        return true
    }
}

private func curlHeaderCallback(
    _ data: UnsafeMutablePointer<CChar>?,
    _ size: Int,
    _ count: Int,
    _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let data, let context else { return 0 }
    let receiver = Unmanaged<ResponseReceiver>.fromOpaque(context).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
    receiver.receiveHeaderLine(line)
    return size * count
}

private func curlWriteCallback(
    _ data: UnsafeMutablePointer<CChar>?,
    _ size: Int,
    _ count: Int,
    _ context: UnsafeMutableRawPointer?
) -> Int {
    guard let data, let context else { return 0 }
    let receiver = Unmanaged<ResponseReceiver>.fromOpaque(context).takeUnretainedValue()
    if receiver.isCancelled { return 0 }
    let accepted = receiver.receiveBody(Data(bytes: data, count: size * count))
    return accepted ? size * count : 0
}

private func curlProgressCallback(
    _ context: UnsafeMutableRawPointer?,
    _ downloadTotal: curl_off_t,
    _ downloaded: curl_off_t,
    _ uploadTotal: curl_off_t,
    _ uploaded: curl_off_t
) -> Int32 {
    guard let context else { return 0 }
    return Unmanaged<ResponseReceiver>.fromOpaque(context).takeUnretainedValue().isCancelled ? 1 : 0
}
