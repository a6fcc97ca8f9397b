import Foundation

/// A session's derived status: `CLOSED` once closed, else `EXPIRED` once `expiresAt` passed,
/// else `ACTIVE`. Never stored.
public enum SessionStatus: String, Codable, Sendable, CaseIterable {
    case active = "ACTIVE"
    case closed = "CLOSED"
    case expired = "EXPIRED"
}

/// The kinds of environment.
public enum EnvironmentType: String, Codable, Sendable, CaseIterable {
    case development = "DEVELOPMENT"
    case staging = "STAGING"
    case production = "PRODUCTION"
    case preview = "PREVIEW"
}

/// A session as stored: everything the control plane knows, including its scoping ids.
/// Sent between services (`sessions.resolve`, lifecycle events); never shown to users as is.
public struct SessionRecord: Codable, Sendable, Equatable {
    /// Internal id (time-ordered, cuid-like).
    public var id: String
    /// `session_` + id; the id users see.
    public var friendlyId: String
    public var externalId: String?
    public var type: String
    public var taskIdentifier: String?
    public var tags: [String]
    public var metadata: JSONValue?
    public var triggerConfig: JSONValue?
    public var organizationId: String
    public var projectId: String
    public var environmentId: String
    public var environmentType: EnvironmentType
    public var closedAt: Date?
    public var closedReason: String?
    public var expiresAt: Date?
    public var createdAt: Date
    public var updatedAt: Date

    public init(
        id: String,
        friendlyId: String,
        externalId: String?,
        type: String,
        taskIdentifier: String?,
        tags: [String],
        metadata: JSONValue?,
        triggerConfig: JSONValue?,
        organizationId: String,
        projectId: String,
        environmentId: String,
        environmentType: EnvironmentType,
        closedAt: Date?,
        closedReason: String?,
        expiresAt: Date?,
        createdAt: Date,
        updatedAt: Date
    ) {
        self.id = id
        self.friendlyId = friendlyId
        self.externalId = externalId
        self.type = type
        self.taskIdentifier = taskIdentifier
        self.tags = tags
        self.metadata = metadata
        self.triggerConfig = triggerConfig
        self.organizationId = organizationId
        self.projectId = projectId
        self.environmentId = environmentId
        self.environmentType = environmentType
        self.closedAt = closedAt
        self.closedReason = closedReason
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
    }

    /// The status at `now`.
    public func status(at now: Date = Date()) -> SessionStatus {
        if closedAt != nil { return .closed }
        if let expiresAt, expiresAt <= now { return .expired }
        return .active
    }

    /// The key its channels and scopes are addressed by: the externalId when it has one.
    public var addressingKey: String { externalId ?? friendlyId }

    /// The public shape.
    public func item(at now: Date = Date()) -> SessionItem {
        SessionItem(
            id: friendlyId,
            externalId: externalId,
            type: type,
            taskIdentifier: taskIdentifier,
            tags: tags,
            metadata: metadata,
            closedAt: closedAt,
            closedReason: closedReason,
            expiresAt: expiresAt,
            createdAt: createdAt,
            updatedAt: updatedAt,
            status: status(at: now)
        )
    }
}

/// A session as the public API shows it.
public struct SessionItem: Codable, Sendable, Equatable {
    /// The friendlyId (`session_…`).
    public var id: String
    public var externalId: String?
    public var type: String
    public var taskIdentifier: String?
    public var tags: [String]
    public var metadata: JSONValue?
    public var closedAt: Date?
    public var closedReason: String?
    public var expiresAt: Date?
    public var createdAt: Date
    public var updatedAt: Date
    public var status: SessionStatus

    public init(
        id: String,
        externalId: String?,
        type: String,
        taskIdentifier: String?,
        tags: [String],
        metadata: JSONValue?,
        closedAt: Date?,
        closedReason: String?,
        expiresAt: Date?,
        createdAt: Date,
        updatedAt: Date,
        status: SessionStatus
    ) {
        self.id = id
        self.externalId = externalId
        self.type = type
        self.taskIdentifier = taskIdentifier
        self.tags = tags
        self.metadata = metadata
        self.closedAt = closedAt
        self.closedReason = closedReason
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.status = status
    }

    enum CodingKeys: String, CodingKey {
        case id, externalId, type, taskIdentifier, tags, metadata, closedAt, closedReason, expiresAt, createdAt,
            updatedAt, status
    }

    /// Encodes every key, nulls included, so clients see the whole shape.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(externalId, forKey: .externalId)
        try container.encode(type, forKey: .type)
        try container.encode(taskIdentifier, forKey: .taskIdentifier)
        try container.encode(tags, forKey: .tags)
        try container.encode(metadata ?? .null, forKey: .metadata)
        try container.encode(closedAt, forKey: .closedAt)
        try container.encode(closedReason, forKey: .closedReason)
        try container.encode(expiresAt, forKey: .expiresAt)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(updatedAt, forKey: .updatedAt)
        try container.encode(status, forKey: .status)
    }
}

/// `POST /api/v1/sessions`' answer: the session plus a session-scoped token and whether it
/// already existed.
public struct CreatedSession: Codable, Sendable, Equatable {
    public var session: SessionItem
    public var publicAccessToken: String
    public var isCached: Bool

    public init(session: SessionItem, publicAccessToken: String, isCached: Bool) {
        self.session = session
        self.publicAccessToken = publicAccessToken
        self.isCached = isCached
    }

    enum CodingKeys: String, CodingKey { case publicAccessToken, isCached }

    public init(from decoder: any Decoder) throws {
        session = try SessionItem(from: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        publicAccessToken = try container.decode(String.self, forKey: .publicAccessToken)
        isCached = try container.decode(Bool.self, forKey: .isCached)
    }

    public func encode(to encoder: any Encoder) throws {
        try session.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(publicAccessToken, forKey: .publicAccessToken)
        try container.encode(isCached, forKey: .isCached)
    }
}

/// `GET /api/v1/sessions`' answer: a page of sessions and the cursors around it.
public struct SessionPage: Codable, Sendable, Equatable {
    public struct Pagination: Codable, Sendable, Equatable {
        public var next: String?
        public var previous: String?

        public init(next: String? = nil, previous: String? = nil) {
            self.next = next
            self.previous = previous
        }
    }

    public var data: [SessionItem]
    public var pagination: Pagination

    public init(data: [SessionItem], pagination: Pagination) {
        self.data = data
        self.pagination = pagination
    }
}

/// JSON coding with ISO-8601 UTC dates with milliseconds, as the API sends them. Shared
/// instances: encoders and decoders are safe to use from many tasks once configured.
extension JSONEncoder {
    public static let sessions: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(ISO8601.string(from: date))
        }
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}

extension JSONDecoder {
    public static let sessions: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = ISO8601.date(from: text) else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: decoder.codingPath, debugDescription: "not an ISO-8601 date")
                )
            }
            return date
        }
        return decoder
    }()
}

/// ISO-8601 UTC with milliseconds: `2026-11-28T10:00:00.123Z`.
///
/// Every response carries several dates, so the common form is written and read by hand;
/// anything else ISO-8601 (offsets, no fraction) is still read, by Foundation.
public enum ISO8601 {
    public static func string(from date: Date) -> String {
        let milliseconds = date.epochMilliseconds
        var seconds = time_t(milliseconds.floorDivided(by: 1000))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var text = ""
        text.reserveCapacity(24)
        append(Int(parts.tm_year) + 1900, width: 4, to: &text)
        text += "-"
        append(Int(parts.tm_mon) + 1, width: 2, to: &text)
        text += "-"
        append(Int(parts.tm_mday), width: 2, to: &text)
        text += "T"
        append(Int(parts.tm_hour), width: 2, to: &text)
        text += ":"
        append(Int(parts.tm_min), width: 2, to: &text)
        text += ":"
        append(Int(parts.tm_sec), width: 2, to: &text)
        text += "."
        append(Int(milliseconds - Int64(seconds) * 1000), width: 3, to: &text)
        text += "Z"
        return text
    }

    /// Reads ISO-8601 with or without fractional seconds, with `Z` or an offset; a date alone
    /// (`2026-11-30`) is its midnight in UTC. A date and time that name no real moment
    /// (February 31st, 25:61) are refused, not rolled over.
    public static func date(from text: String) -> Date? {
        // The usual UTC forms, checked as they are read.
        if let date = fastDate(from: text.utf8.count == 10 ? text + "T00:00:00Z" : text) { return date }
        let head = Array(text.utf8.prefix(19))
        if head.count == 19, [head[4], head[7], head[13], head[16]] == Array("--::".utf8), fields(head) == nil {
            return nil
        }
        return (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    /// `YYYY-MM-DD?HH:MM:SS` read and checked: a day of that month (leap years counted), a time
    /// up to 23:59:59.
    private static func fields(
        _ bytes: [UInt8]
    ) -> (year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int)? {
        func number(_ range: Range<Int>) -> Int? {
            var value = 0
            for index in range {
                let digit = Int(bytes[index]) - 48
                guard (0...9).contains(digit) else { return nil }
                value = value * 10 + digit
            }
            return value
        }
        guard bytes.count >= 19, let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            (1...12).contains(month), hour < 24, minute < 60, second < 60
        else { return nil }
        let isLeap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let days = [31, isLeap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
        guard (1...days).contains(day) else { return nil }
        return (year, month, day, hour, minute, second)
    }

    /// `YYYY-MM-DDTHH:MM:SS[.s{1,9}](Z|+00:00)`: UTC, as this API, PostgreSQL (with
    /// `TimeZone=UTC`) and NATS write it; milliseconds are kept.
    private static func fastDate(from text: String) -> Date? {
        var bytes = Array(text.utf8)
        if bytes.count > 6, bytes.suffix(6).elementsEqual("+00:00".utf8) {
            bytes.removeLast(6)
        } else if bytes.last == 90 {
            bytes.removeLast()
        } else {
            return nil
        }
        if bytes.count == 19 { bytes += Array(".000".utf8) }
        guard bytes.count >= 21, bytes.count <= 29, bytes[19] == 46 else { return nil }
        bytes = Array((bytes + Array("00".utf8)).prefix(23)) + [90]
        guard bytes.count == 24, bytes[4] == 45, bytes[7] == 45, bytes[10] == 84, bytes[13] == 58,
            bytes[16] == 58, bytes[19] == 46, bytes[23] == 90, let time = fields(bytes),
            case let digits = bytes[20..<23].map({ Int($0) - 48 }), digits.allSatisfy((0...9).contains)
        else { return nil }
        var parts = tm()
        parts.tm_year = Int32(time.year - 1900)
        parts.tm_mon = Int32(time.month - 1)
        parts.tm_mday = Int32(time.day)
        parts.tm_hour = Int32(time.hour)
        parts.tm_min = Int32(time.minute)
        parts.tm_sec = Int32(time.second)
        let seconds = timegm(&parts)
        let millisecond = digits[0] * 100 + digits[1] * 10 + digits[2]
        return Date(timeIntervalSince1970: Double(seconds) + Double(millisecond) / 1000)
    }

    private static func append(_ value: Int, width: Int, to text: inout String) {
        let digits = String(value)
        if digits.count < width { text += String(repeating: "0", count: width - digits.count) }
        text += digits
    }
}

extension Date {
    /// Milliseconds since the epoch, to the nearest: the dates here carry milliseconds, and a
    /// floor of the Double product turns some of them (…956 as …955.9999) into one less.
    public var epochMilliseconds: Int64 {
        let value = (timeIntervalSince1970 * 1000).rounded()
        guard value.isFinite else { return 0 }
        return Int64(max(-9.0e18, min(9.0e18, value)))
    }

    /// The dates the API accepts: 1970-01-01 through 2299-12-31 (ClickHouse's `DateTime64` ends
    /// in 2299; nothing here needs an earlier one).
    public static let supportedRange = Date(timeIntervalSince1970: 0)...Date(timeIntervalSince1970: 10_413_791_999.999)
}

extension Int64 {
    fileprivate func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}
