import Foundation
import HTTPClient
import Testing

@Suite struct ServerSentEventParserTests {
    @Test func splitsEventsAcrossArbitraryChunks() {
        let stream =
            "event: batch\r\nid: 4\r\ndata: {\"a\":1}\r\n\r\n: comment\r\revent: ping\ndata:\n\ndata: one\ndata:two\n\n"
        let bytes = Array(stream.utf8)
        for chunkSize in [1, 2, 3, 7, bytes.count] {
            var parser = ServerSentEventParser()
            var events: [ServerSentEvent] = []
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + chunkSize, bytes.count)
                events += parser.feed(Data(bytes[offset..<end]))
                offset = end
            }
            #expect(
                events == [
                    ServerSentEvent(event: "batch", id: "4", data: "{\"a\":1}"),
                    ServerSentEvent(event: "ping", data: ""),
                    ServerSentEvent(data: "one\ntwo"),
                ],
                "chunk size \(chunkSize)"
            )
        }
    }

    @Test func keepsAnUnfinishedEventUntilItsBlankLine() {
        var parser = ServerSentEventParser()
        #expect(parser.feed(Data("event: batch\ndata: x\n".utf8)).isEmpty)
        #expect(parser.feed(Data("\n".utf8)) == [ServerSentEvent(event: "batch", data: "x")])
    }
}
