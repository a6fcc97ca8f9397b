internal import CNats
import Foundation

/// A message received from NATS, copied out of cnats' buffers.
public struct NatsMessage: Sendable {
    public var subject: String
    /// Where to send a reply, if the sender asked for one.
    public var replySubject: String?
    /// Header fields; cnats keeps keys case-sensitive.
    public var headers: [String: String]
    public var payload: Data
    /// Where the message sits in its JetStream stream, for messages read from a stream.
    public var metadata: JetStreamMetadata?

    public init(subject: String, replySubject: String? = nil, headers: [String: String] = [:], payload: Data = Data()) {
        self.subject = subject
        self.replySubject = replySubject
        self.headers = headers
        self.payload = payload
    }

    /// The status of a header-only status message (503 no responders, 404 not found, …).
    public var status: Int? { headers["Status"].flatMap { Int($0.prefix(3)) } }

    /// Copies a cnats message; the caller still owns (and destroys) `message`.
    init(copying message: OpaquePointer) {
        subject = String(cString: natsMsg_GetSubject(message))
        replySubject = natsMsg_GetReply(message).map { String(cString: $0) }
        let length = Int(natsMsg_GetDataLength(message))
        payload = length > 0 ? Data(bytes: natsMsg_GetData(message), count: length) : Data()
        headers = [:]
        var keys: UnsafeMutablePointer<UnsafePointer<CChar>?>?
        var count: Int32 = 0
        if natsMsgHeader_Keys(message, &keys, &count) == NATS_OK, let keys {
            defer { free(UnsafeMutableRawPointer(mutating: keys)) }
            for index in 0..<Int(count) {
                guard let key = keys[index] else { continue }
                var value: UnsafePointer<CChar>?
                if natsMsgHeader_Get(message, key, &value) == NATS_OK, let value {
                    headers[String(cString: key)] = String(cString: value)
                }
            }
        }
    }
}

/// Builds a cnats message, hands it to `body`, then destroys it.
func withNatsMessage<Result>(
    subject: String,
    reply: String?,
    headers: [String: String],
    payload: Data,
    _ body: (OpaquePointer) throws -> Result
) throws -> Result {
    var message: OpaquePointer?
    let status = payload.withUnsafeBytes { bytes in
        natsMsg_Create(&message, subject, reply, bytes.bindMemory(to: CChar.self).baseAddress, Int32(bytes.count))
    }
    guard status == NATS_OK, let message else { throw NatsError(status: status) }
    defer { natsMsg_Destroy(message) }
    for (key, value) in headers {
        let headerStatus = natsMsgHeader_Set(message, key, value)
        guard headerStatus == NATS_OK else { throw NatsError(status: headerStatus) }
    }
    return try body(message)
}

extension NatsError {
    /// An error for a cnats status, with the library's last error text.
    init(status: natsStatus) {
        let code: Code =
            switch status {
            case NATS_TIMEOUT: .timeout
            case NATS_NO_RESPONDERS: .noResponders
            case NATS_NOT_FOUND: .notFound
            case NATS_CONNECTION_CLOSED, NATS_INVALID_SUBSCRIPTION, NATS_DRAINING: .closed
            case NATS_NO_SERVER, NATS_CONNECTION_DISCONNECTED, NATS_NOT_YET_CONNECTED, NATS_IO_ERROR,
                NATS_STALE_CONNECTION:
                .connectionFailed
            case NATS_INVALID_ARG, NATS_INVALID_SUBJECT, NATS_MAX_PAYLOAD: .invalidArgument
            default: .library
            }
        var lastStatus = NATS_OK
        let detail = nats_GetLastError(&lastStatus).map { String(cString: $0) }
        let text = String(cString: natsStatus_GetText(status))
        self.init(
            code,
            natsStatus: Int32(bitPattern: status.rawValue),
            message: detail.map { $0.isEmpty ? text : $0 } ?? text
        )
    }
}
