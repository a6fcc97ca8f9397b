import ArgumentParser
import Contracts
import Foundation
import HTTPClient

extension ChannelIO: ExpressibleByArgument {}

struct Append: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Append one record to a session channel.",
        discussion: "The body is the argument, or standard input when it is absent or '-'."
    )

    @OptionGroup var api: APIOptions
    @Argument(help: "session_… id or externalId.") var session: String
    @Argument(help: "The record (default: standard input).") var body: String?
    @Option(help: "Channel: out (task → clients) or in (clients → task).") var io: ChannelIO = .out
    @Option(help: "Idempotency key: appending again with it writes nothing and returns the first seqNum.")
    var partId: String?

    func validate() throws {
        if partId?.isEmpty == true { throw ValidationError("--part-id must not be empty") }
    }

    struct Appended: Decodable {
        var ok: Bool
        var seqNum: UInt64
    }

    func run() async throws {
        try await reporting {
            let data =
                body.flatMap { $0 == "-" ? nil : Data($0.utf8) } ?? FileHandle.standardInput.readDataToEndOfFile()
            var headers: HTTPHeaders = ["Content-Type": "text/plain; charset=utf-8"]
            if let partId { headers.add("X-Part-Id", partId) }
            let response = try await api.client().send(
                "POST",
                "/realtime/v1/sessions/\(try SessionsClient.segment(session, "the session"))/\(io.rawValue)/append",
                body: data,
                headers: headers
            )
            if api.json { return say(String(decoding: response.body, as: UTF8.self)) }
            guard let appended = try? JSONDecoder().decode(Appended.self, from: response.body) else {
                throw CLIError(.failed, "the server answered something unexpected")
            }
            say("appended \(session).\(io.rawValue) seq \(appended.seqNum)")
        }
    }
}

struct Tail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a channel's records, then follow it live.",
        discussion: """
            Prints each record's data on its own line (--json: one JSON object per record). Reconnects after \
            a disconnect from the last record it printed, so nothing is missed or printed twice. Stop with Ctrl-C.
            """
    )

    @OptionGroup var api: APIOptions
    @Argument(help: "session_… id or externalId.") var session: String
    @Option(help: "Channel: out or in.") var io: ChannelIO = .out
    @Option(parsing: .unconditional, help: "Start at this seqNum (default 0).") var from: Int64?
    @Option(parsing: .unconditional, help: "Start with the last N records (0: only records appended from now on).")
    var last: Int64?
    @Flag(help: "Stop at the end of what the channel holds now instead of following it.")
    var noFollow = false
    @Option(
        parsing: .unconditional,
        help: "Seconds the server keeps an idle stream open before tail reconnects (1-600)."
    )
    var idleTimeout = 60

    func validate() throws {
        if from != nil && last != nil { throw ValidationError("use either --from or --last") }
        if let from, from < 0 { throw ValidationError("--from must be 0 or more") }
        if let last, last < 0 { throw ValidationError("--last must be 0 or more") }
        guard (1...600).contains(idleTimeout) else { throw ValidationError("--idle-timeout must be 1-600") }
    }

    struct Batch: Decodable {
        struct Record: Decodable {
            var seq_num: Int64
            var timestamp: Int64
            var body: String
        }
        var records: [Record]
    }

    struct Envelope: Decodable {
        var data: JSONValue?
        var id: String?
    }

    struct Line: Encodable {
        var seqNum: Int64
        var timestamp: Int64
        var id: String?
        var data: JSONValue?
    }

    func run() async throws {
        try await reporting {
            let client = try api.client()
            let path = "/realtime/v1/sessions/\(try SessionsClient.segment(session, "the session"))/\(io.rawValue)"
            let end: Int64
            do {
                end = try await lastSeqNum(client, path)
            } catch let error as CLIError where error.kind == .notFound && !noFollow {
                // Following an externalId before its session exists waits for it (the server's
                // stream does); nothing to print before then.
                end = -1
            }
            // The record before the first one to print; the stream resumes after it.
            var position = last.map { max(-1, end - $0) } ?? ((from ?? 0) - 1)
            var backoff = Duration.milliseconds(250)
            while true {
                if noFollow && position >= end { return }
                do {
                    var headers: HTTPHeaders = ["Accept": "text/event-stream", "Timeout-Seconds": String(idleTimeout)]
                    if position >= 0 { headers.add("Last-Event-ID", String(position)) }
                    let response = try await client.stream(path, headers: headers)
                    var parser = ServerSentEventParser()
                    for try await chunk in response.body {
                        for event in parser.feed(chunk) where event.event == "batch" {
                            guard let batch = try? JSONDecoder().decode(Batch.self, from: Data(event.data.utf8)) else {
                                throw CLIError(.failed, "the server sent a batch that is not JSON")
                            }
                            for record in batch.records where record.seq_num > position {
                                try print(record)
                                position = record.seq_num
                                if noFollow && position >= end { return }
                            }
                        }
                        backoff = .milliseconds(250)
                    }
                } catch let error as CLIError where error.kind != .unreachable {
                    throw error
                } catch {
                    note("tail: disconnected (\(error)); resuming after seq \(position)")
                    try await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, .seconds(5))
                }
            }
        }
    }

    private func print(_ record: Batch.Record) throws {
        let envelope = try? JSONDecoder().decode(Envelope.self, from: Data(record.body.utf8))
        if api.json {
            let line = Line(
                seqNum: record.seq_num,
                timestamp: record.timestamp,
                id: envelope?.id,
                data: envelope.map { $0.data ?? .null } ?? .string(record.body)
            )
            return say(String(decoding: try JSONEncoder.sessions.encode(line), as: UTF8.self))
        }
        switch envelope?.data {
        case .string(let text): say(text)
        case .some(let value):
            // As written: encoding it again would sort its keys and round big numbers.
            let text =
                try RawJSON.member("data", of: record.body)
                ?? String(decoding: JSONEncoder.sessions.encode(value), as: UTF8.self)
            say(text)
        case .none: say(record.body)
        }
    }

    private func lastSeqNum(_ client: SessionsClient, _ path: String) async throws -> Int64 {
        let response = try await client.send("HEAD", path)
        guard let text = response.headers["X-Last-Seq-Num"], let last = Int64(text) else {
            throw CLIError(.failed, "the server did not say where the channel ends")
        }
        return last
    }
}

struct Wait: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Wait for the next record on a channel (a waitpoint), then print its data.",
        discussion: "Exits 0 with the record's data when one arrives, 6 when --timeout passes first."
    )

    @OptionGroup var api: APIOptions
    @Argument(help: "session_… id or externalId.") var session: String
    @Option(help: "Channel: in (default) or out.") var io: ChannelIO = .in
    @Option(help: "The run that waits (any id of yours).") var run = "run_sessionsctl"
    @Option(help: "Give up after this long: 30s, 5m, 2h, 1d… (default: wait for ever).") var timeout: String?
    @Option(
        parsing: .unconditional,
        help: "Only a record after this seqNum counts; -1: any record (default: only records appended from now on)."
    )
    var lastSeqNum: Int64?

    struct Created: Decodable {
        var waitpointId: String
    }

    func run() async throws {
        try await reporting {
            let client = try api.client()
            var body: [String: JSONValue] = ["session": .string(session), "io": .string(io.rawValue)]
            if let timeout { body["timeout"] = .string(timeout) }
            if let lastSeqNum { body["lastSeqNum"] = .number(Double(lastSeqNum)) }
            let (created, _) = try await client.json(
                Created.self,
                "POST",
                "/api/v1/runs/\(try SessionsClient.segment(run, "--run"))/session-streams/wait",
                body: JSONValue.object(body)
            )
            note("waiting on \(session).\(io.rawValue) (\(created.waitpointId))")
            while true {
                let (waitpoint, raw) = try await client.json(
                    WaitpointItem.self,
                    "GET",
                    "/api/v1/waitpoints/\(created.waitpointId)/wait",
                    // Under the 60 s idle timeout many load balancers have.
                    query: [("timeout", "50")],
                    timeout: .seconds(80)
                )
                switch waitpoint.status {
                case .pending: continue
                case .completed:
                    return say(api.json ? String(decoding: raw, as: UTF8.self) : waitpoint.output?.value ?? "")
                case .timedOut:
                    if api.json { say(String(decoding: raw, as: UTF8.self)) }
                    throw CLIError(.timedOut, "\(created.waitpointId) timed out before a record arrived")
                }
            }
        }
    }
}
