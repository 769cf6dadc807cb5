using System.Collections.Concurrent;
using System.Buffers;
using System.Text.Unicode;
using System.Text.Json;

namespace Bursar.Providers.Dialects;

/// <summary>
/// The model names requests carry, read once into strings and shared: a service sends the same few names on every
/// call, so reading one is a lookup, not a new string per request. Bounded (<see cref="MaxNames"/>): past it, or for a
/// long or escaped name, the name is read as a new string.
/// </summary>
internal static class ModelNames
{
    public const int MaxNames = 1_024;
    private const int MaxNameLength = 128;

    private static readonly ConcurrentDictionary<string, string> Names = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, string>.AlternateLookup<ReadOnlySpan<char>> ByChars = Names.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>The string value the reader is on (a <see cref="JsonTokenType.String"/>).</summary>
    public static string Read(ref Utf8JsonReader r)
    {
        if (r.ValueIsEscaped || r.HasValueSequence || r.ValueSpan.Length > MaxNameLength) return r.GetString()!;
        var bytes = r.ValueSpan;
        Span<char> chars = stackalloc char[MaxNameLength];
        // invalid UTF-8 is left to GetString, which refuses it as it always has
        if (Utf8.ToUtf16(bytes, chars, out _, out var n, replaceInvalidSequences: false) != OperationStatus.Done) return r.GetString()!;
        var name = chars[..n];
        if (ByChars.TryGetValue(name, out var known)) return known;
        var s = new string(name);
        if (Names.Count < MaxNames) Names.TryAdd(s, s);
        return s;
    }
}
