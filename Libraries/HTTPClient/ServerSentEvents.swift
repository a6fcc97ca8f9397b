import Foundation

/// One Server-Sent Event.
public struct ServerSentEvent: Sendable, Equatable {
    /// The `event:` field; nil for the default ("message").
    public var event: String?
    /// The `id:` field, when the event carried one.
    public var id: String?
    /// The `data:` lines, joined with newlines.
    public var data: String

    public init(event: String? = nil, id: String? = nil, data: String = "") {
        self.event = event
        self.id = id
        self.data = data
    }
}

/// Splits a `text/event-stream` body, fed in arbitrary chunks, into events (WHATWG rules: `\n`,
/// `\r\n` or `\r` line ends, one optional space after the colon, comments dropped). Any block with
/// a field is an event, so data-less heartbeats such as `event: ping` are seen too.
public struct ServerSentEventParser: Sendable {
    private var pending = Data()
    private var current = ServerSentEvent()
    private var dataLines: [Substring] = []
    private var sawField = false

    public init() {}

    public mutating func feed(_ chunk: Data) -> [ServerSentEvent] {
        pending.append(chunk)
        var events: [ServerSentEvent] = []
        var lineStart = pending.startIndex
        var index = pending.startIndex
        while index < pending.endIndex {
            let byte = pending[index]
            guard byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") else {
                index += 1
                continue
            }
            // A `\r` at the end of the buffer may be the first half of `\r\n`: wait for more.
            if byte == UInt8(ascii: "\r") && index + 1 == pending.endIndex { break }
            let line = String(decoding: pending[lineStart..<index], as: UTF8.self)
            if byte == UInt8(ascii: "\r") && pending[index + 1] == UInt8(ascii: "\n") { index += 1 }
            index += 1
            lineStart = index
            if let event = take(line) { events.append(event) }
        }
        pending = Data(pending[lineStart...])
        return events
    }

    private mutating func take(_ line: String) -> ServerSentEvent? {
        if line.isEmpty {
            defer {
                current = ServerSentEvent()
                dataLines = []
                sawField = false
            }
            guard sawField else { return nil }
            current.data = dataLines.joined(separator: "\n")
            return current
        }
        if line.hasPrefix(":") { return nil }
        let field: Substring
        var value: Substring
        if let colon = line.firstIndex(of: ":") {
            field = line[..<colon]
            value = line[line.index(after: colon)...]
            if value.hasPrefix(" ") { value = value.dropFirst() }
        } else {
            field = line[...]
            value = ""
        }
        switch field {
        case "event": current.event = String(value)
        case "id": current.id = String(value)
        case "data": dataLines.append(value)
        default: return nil
        }
        sawField = true
        return nil
    }
}
