import Foundation
import Synchronization

/// Makes time-ordered, collision-resistant ids (cuid-like): 25 lowercase base-36 characters —
/// milliseconds since 1970 (9), a per-process counter (4), and randomness (12). Ids made later
/// sort after earlier ones, to the millisecond.
///
/// Randomness comes from the system generator, one 64-bit draw per handful of characters: each
/// draw is a system call, and these are made on every request.
public enum Identifier {
    private static let counter = Atomic<UInt32>(UInt32.random(in: 0..<1_679_616))

    public static func make(now: Date = Date()) -> String {
        let milliseconds = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let count = counter.add(1, ordering: .relaxed).newValue % 1_679_616
        return pad(String(milliseconds, radix: 36), to: 9) + pad(String(count, radix: 36), to: 4)
            + random(12, from: base36)
    }

    /// A random secret of `length` base-62 characters, for API keys.
    public static func secret(length: Int) -> String { random(length, from: base62) }

    /// A random (version 4) UUID, lowercase: as Foundation's, without opening `/dev/urandom`.
    public static func uuid() -> String {
        var random = SystemRandomNumberGenerator()
        let high = (random.next() as UInt64) & ~0xF000 | 0x4000  // version 4
        let low = (random.next() as UInt64) & ~(0b11 << 62) | (0b10 << 62)  // variant 1
        let hex = hexDigits(high, 16) + hexDigits(low, 16)
        let groups = [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { range in
            hex.dropFirst(range.lowerBound).prefix(range.count)
        }
        return groups.joined(separator: "-")
    }

    private static let base36 = Array("0123456789abcdefghijklmnopqrstuvwxyz")
    private static let base62 = Array("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

    /// `count` characters of `alphabet`, each uniform and independent: a draw uniform below
    /// `alphabet.count^k` (the largest power that fits in 64 bits) gives k of them, its digits.
    private static func random(_ count: Int, from alphabet: [Character]) -> String {
        let base = UInt64(alphabet.count)
        var perDraw = 0
        var span: UInt64 = 1
        while span <= UInt64.max / base {
            span *= base
            perDraw += 1
        }
        var random = SystemRandomNumberGenerator()
        var characters: [Character] = []
        characters.reserveCapacity(count)
        while characters.count < count {
            var value = random.next(upperBound: span)
            for _ in 0..<min(perDraw, count - characters.count) {
                characters.append(alphabet[Int(value % base)])
                value /= base
            }
        }
        return String(characters)
    }

    private static func hexDigits(_ value: UInt64, _ width: Int) -> String { pad(String(value, radix: 16), to: width) }

    private static func pad(_ text: String, to length: Int) -> String {
        String(repeating: "0", count: max(0, length - text.count)) + text.suffix(length)
    }
}
