using System.Security.Cryptography;

namespace Bursar.Core.Ledger;

/// <summary>
/// Ledger record ids: UUIDv7 (RFC 9562) as 32 lower-case hex digits, the form <c>Guid.CreateVersion7(now).ToString("N")</c>
/// gives, time-ordered by their millisecond. <c>Guid.CreateVersion7</c> asks the kernel for 10 random bytes on every call
/// (a system call, about a microsecond on a virtual machine: a fifth of a call through the .NET library); here each
/// thread draws from its own generator, seeded from the kernel's once, and a counter in the 12 <c>rand_a</c> bits
/// keeps the ids of one thread within one millisecond distinct and in order. The 62 <c>rand_b</c> bits stay random, so
/// ids from several processes (gateway instances sharing one PostgreSQL ledger) do not collide in practice.
/// </summary>
public static class CallIds
{
    [ThreadStatic] private static Generator? t_generator;

    /// <summary>A new id for a call that started at <paramref name="now"/>.</summary>
    public static string New(DateTimeOffset now) => (t_generator ??= new Generator()).Next(now.ToUnixTimeMilliseconds());

    private sealed class Generator
    {
        private ulong _s0, _s1; // xorshift128+
        private long _lastMs = long.MinValue;
        private int _counter;

        public Generator()
        {
            Span<byte> seed = stackalloc byte[16];
            RandomNumberGenerator.Fill(seed);
            _s0 = BitConverter.ToUInt64(seed) | 1;
            _s1 = BitConverter.ToUInt64(seed[8..]);
        }

        private ulong NextRandom()
        {
            var s1 = _s0;
            var s0 = _s1;
            _s0 = s0;
            s1 ^= s1 << 23;
            _s1 = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
            return _s1 + s0;
        }

        public string Next(long unixMs)
        {
            if (unixMs > _lastMs)
            {
                _lastMs = unixMs;
                _counter = (int)(NextRandom() & 0x3FF); // start low in the 12 bits: room for thousands of ids in this millisecond
            }
            else if (++_counter > 0xFFF)
            {
                // more than the 12 bits hold in one millisecond: borrow the next one (ids stay unique and ordered)
                _lastMs++;
                _counter = 0;
            }
            var ms = (ulong)_lastMs & 0xFFFF_FFFF_FFFF;
            var high = (ms << 16) | 0x7000UL | (uint)_counter;           // unix_ts_ms (48) | ver (4) | rand_a (12)
            var low = (NextRandom() & 0x3FFF_FFFF_FFFF_FFFFUL) | 0x8000_0000_0000_0000UL; // var (2) | rand_b (62)
            return string.Create(32, (high, low), static (chars, v) =>
            {
                Span<byte> bytes = stackalloc byte[16]; // big-endian: the hex reads as the two numbers do, most significant first
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes, v.high);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], v.low);
                Convert.TryToHexStringLower(bytes, chars, out _);
            });
        }
    }
}
