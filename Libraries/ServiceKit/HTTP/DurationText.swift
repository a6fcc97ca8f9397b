import Foundation

/// Durations written the way people write them: `30s`, `5m`, `2h`, `1d`, `1w`, `1h30m`.
public enum DurationText {
    /// The longest duration accepted: 100 years.
    public static let longest: TimeInterval = 100 * 365 * 86_400

    /// Seconds of a duration made of `{digits}{w|d|h|hr|m|s}` parts; nil for anything else, for
    /// zero and for more than ``longest``.
    public static func seconds(_ text: String) -> TimeInterval? {
        let units: [(String, Double)] = [("hr", 3600), ("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)]
        var rest = Substring(text)
        var total: Double = 0
        while !rest.isEmpty {
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let amount = Double(digits) else { return nil }
            rest = rest.dropFirst(digits.count)
            guard let (unit, seconds) = units.first(where: { rest.hasPrefix($0.0) }) else { return nil }
            rest = rest.dropFirst(unit.count)
            total += amount * seconds
        }
        return total > 0 && total <= longest ? total : nil
    }
}
