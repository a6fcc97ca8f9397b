import Foundation
import Synchronization

/// Makes time-ordered, collision-resistant ids (cuid-like): 25 lowercase base-36 characters —
/// milliseconds since 1970 (9), a per-process counter (4), and randomness (12). Ids made later
/// sort after earlier ones, to the millisecond.
public enum Identifier {
    private static let counter = Atomic<UInt32>(UInt32.random(in: 0..<1_679_616))

    public static func make(now: Date = Date()) -> String {
        let milliseconds = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let count = counter.add(1, ordering: .relaxed).newValue % 1_679_616
        var random = SystemRandomNumberGenerator()
        let tail = (0..<12).map { _ in alphabet[Int(random.next(upperBound: UInt8(36)))] }
        return pad(String(milliseconds, radix: 36), to: 9) + pad(String(count, radix: 36), to: 4) + String(tail)
    }

    /// A random secret of `length` base-62 characters, for API keys.
    public static func secret(length: Int) -> String {
        var random = SystemRandomNumberGenerator()
        let characters = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        return String((0..<length).map { _ in characters[Int(random.next(upperBound: UInt8(62)))] })
    }

    private static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")

    private static func pad(_ text: String, to length: Int) -> String {
        String(repeating: "0", count: max(0, length - text.count)) + text.suffix(length)
    }
}
