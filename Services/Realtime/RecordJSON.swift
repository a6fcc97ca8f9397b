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
        JSONString.appendQuoted(data, to: &text)
        text += #","id":"#
        JSONString.appendQuoted(id, to: &text)
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
            JSONString.appendQuoted(record.text, to: &text)
            if !record.headers.isEmpty {
                // Only an S2 writer's records have them: `[[name, value], …]`, as S2 reads them.
                text += #","headers":["#
                for (index, header) in record.headers.enumerated() {
                    text += index == 0 ? "[" : ",["
                    JSONString.appendQuoted(header[0], to: &text)
                    text += ","
                    JSONString.appendQuoted(header[1], to: &text)
                    text += "]"
                }
                text += "]"
            }
            text += #","seq_num":\#(record.seqNum),"timestamp":\#(record.timestamp)}"#
            buffer.writeString(text)
        }
        buffer.writeStaticString("]}")
    }
}
