import Contracts
import Foundation
import Nats
import ServiceKit

/// Realtime's NATS endpoints, for the other services.
enum RealtimeEndpoints {
    /// At most this many records per `channels.read` answer.
    static let maxReadLimit = 1000

    static func make(store: any StreamStore) -> [NatsEndpoint] {
        [
            NatsEndpoint(name: "read-channel", subject: Subjects.readChannel) { message in
                guard let request = try? JSONDecoder.sessions.decode(ReadChannelRequest.self, from: message.payload),
                    (1...maxReadLimit).contains(request.limit)
                else { throw NatsServiceError(.badRequest, "Invalid ReadChannelRequest payload") }
                do {
                    let tail = try await store.tail(request.channel)
                    let records =
                        request.fromSeqNum < tail.nextSeqNum
                        ? try await store.read(request.channel, from: request.fromSeqNum, limit: request.limit) : []
                    return try JSONEncoder.sessions.encode(
                        ReadChannelResponse(
                            records: records,
                            nextSeqNum: max(tail.nextSeqNum, records.last.map { $0.seqNum + 1 } ?? 0)
                        )
                    )
                } catch is StreamStoreError {
                    throw NatsServiceError(.unavailable, "The channel store is unavailable")
                }
            }
        ]
    }
}
