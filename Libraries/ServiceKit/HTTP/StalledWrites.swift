import NIOCore

/// Closes a connection whose peer takes none of the data waiting for it for `timeout`: the
/// connection stayed unwritable (more buffered than its high-water mark) and its buffer did not
/// shrink all that time. A slow reader that makes progress is left alone — as far as this
/// can see: the kernel takes more of our buffer only once a good part of its own send buffer
/// (up to 4 MiB) has drained, so a reader slower than about a third of that per timeout
/// (22 KB/s at the default 60 s) can look stalled; it is closed and resumes. The idle timeout
/// never cuts a response that streams (SSE, long-polls), so without this a client that stops
/// reading would hold its connection, its task and its last batch for ever; closed, the write
/// fails and the response ends.
final class StalledWriteCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Never

    private let timeout: TimeAmount
    private var deadline: Scheduled<Void>?
    /// What was waiting when the current watch began.
    private var buffered = 0

    init(timeout: TimeAmount) { self.timeout = timeout }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            stopWatching()
        } else if deadline == nil {
            watch(context)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopWatching()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopWatching()
    }

    private func watch(_ context: ChannelHandlerContext) {
        buffered = Self.bufferedBytes(context)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = bound.value
            handler.deadline = nil
            guard !context.channel.isWritable else { return }
            if Self.bufferedBytes(context) < handler.buffered {
                handler.watch(context)
            } else {
                context.close(promise: nil)
            }
        }
    }

    private func stopWatching() {
        deadline?.cancel()
        deadline = nil
    }

    private static func bufferedBytes(_ context: ChannelHandlerContext) -> Int {
        (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }
}
