import Contracts
import NIOCore

/// JSON written by hand for the hot paths: every append wraps its body in an envelope, and a
/// fan-out writes each record once per subscriber, where a generic `JSONEncoder` would cost tens
/// of microseconds a time. The output is what `JSONEncoder.sessions` writes (sorted keys,
/// slashes unescaped).
enum RecordJSON {
    /// `{"data":…,"id":…}`: the envelope of a record appended through the API.
    static func envelope(data: String, id: String) -> String {
        var text = #"{"data":"#
        appendQuoted(data, to: &text)
        text += #","id":"#
        appendQuoted(id, to: &text)
        text += "}"
        return text
    }

    /// `{"records":[{"body":…,"seq_num":…,"timestamp":…},…]}`.
    static func writeBatch(_ records: [ChannelRecord], to buffer: inout ByteBuffer) {
        buffer.writeStaticString(#"{"records":["#)
        var text = ""
        for (index, record) in records.enumerated() {
            text.removeAll(keepingCapacity: true)
            if index > 0 { text += "," }
            text += #"{"body":"#
            appendQuoted(record.text, to: &text)
            if !record.headers.isEmpty {
                // Only an S2 writer's records have them: `[[name, value], …]`, as S2 reads them.
                text += #","headers":["#
                for (index, header) in record.headers.enumerated() {
                    text += index == 0 ? "[" : ",["
                    appendQuoted(header[0], to: &text)
                    text += ","
                    appendQuoted(header[1], to: &text)
                    text += "]"
                }
                text += "]"
            }
            text += #","seq_num":\#(record.seqNum),"timestamp":\#(record.timestamp)}"#
            buffer.writeString(text)
        }
        buffer.writeStaticString("]}")
    }

    /// Appends `value` as a JSON string literal.
    static func appendQuoted(_ value: String, to text: inout String) {
        text += "\""
        guard value.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
            text += value
            text += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": text += "\\\""
            case "\\": text += "\\\\"
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case "\u{08}": text += "\\b"
            case "\u{0C}": text += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                text += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: text.unicodeScalars.append(scalar)
            }
        }
        text += "\""
    }
}
