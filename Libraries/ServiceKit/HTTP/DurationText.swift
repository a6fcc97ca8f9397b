import Contracts
import Foundation

/// Durations written the way people write them: `30s`, `5m`, `2h`, `1d`, `1w`, `1h30m`.
public enum DurationText {
    /// The longest duration accepted: 100 years.
    public static let longest: TimeInterval = 100 * 365 * 86_400

    /// Seconds of a duration made of `{digits}{w|d|h|hr|m|s}` parts, largest unit first and each
    /// unit once; nil for anything else, for zero and for more than ``longest``.
    public static func seconds(_ text: String) -> TimeInterval? {
        written(text).flatMap { $0 > 0 && $0 <= longest ? $0 : nil }
    }

    /// Seconds of the duration `subject` names, or a 400 that says what is wrong with it:
    /// `form` (e.g. "must be a duration like 30s or 5m") when it is not written as one, else
    /// that it is zero or longer than ``longest``. `subject` starts the message, as in
    /// "Invalid request body: timeout".
    public static func seconds(_ text: String, subject: String, form: String) throws -> TimeInterval {
        guard let seconds = written(text) else { throw APIError(.badRequest, "\(subject) \(form)") }
        guard seconds > 0 else { throw APIError(.badRequest, "\(subject) must be longer than zero") }
        guard seconds <= longest else { throw APIError(.badRequest, "\(subject) must be at most 100 years") }
        return seconds
    }

    /// Seconds of a duration written as one, of any length.
    private static func written(_ text: String) -> TimeInterval? {
        // Largest first; `hr` before `h`, for which it is another name.
        let units: [(String, Double)] = [("w", 604_800), ("d", 86_400), ("hr", 3600), ("h", 3600), ("m", 60), ("s", 1)]
        var rest = Substring(text)
        var total: Double = 0
        var smallest = Double.infinity
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let amount = Double(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            guard let (unit, seconds) = units.first(where: { rest.hasPrefix($0.0) }), seconds < smallest else {
                return nil
            }
            rest = rest.dropFirst(unit.count)
            smallest = seconds
            total += amount * seconds
        }
        return rest.isEmpty && !text.isEmpty ? total : nil
    }
}
