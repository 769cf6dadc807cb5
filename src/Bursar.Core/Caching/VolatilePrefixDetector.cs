using System.Collections.Concurrent;
using System.Text;
using System.Text.RegularExpressions;

namespace Bursar.Core.Caching;

/// <summary>A prefix that changes between calls of one route only in volatile tokens, which silently defeats prompt caching.</summary>
public sealed record VolatilePrefix(string Kind, string Example, long PrefixTokens)
{
    public string Describe(decimal? costPerCallUsd) =>
        $"the system prompt differs between calls only in a {Kind} ('{Example}'), so its {PrefixTokens:N0}-token prefix is never read from cache"
        + (costPerCallUsd is { } c ? $"; about ${c:0.######} per call. Move the {Kind} after the stable prefix (Bursar:PromptCache:MoveVolatileToEnd)." : ".");
}

/// <summary>
/// Detects system prompts that differ between calls of the same route only in timestamps, dates, times, UUIDs, request
/// ids or long numbers ("one moved timestamp halved a bill"), and can move those values after the stable prefix.
/// </summary>
public sealed partial class VolatilePrefixDetector
{
    [GeneratedRegex(@"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b|\b\d{1,2}:\d{2}(?::\d{2})?\b", RegexOptions.CultureInvariant)]
    private static partial Regex Timestamp();

    [GeneratedRegex(@"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b|\b(?:req|request|msg|run|trace|session)[_-][A-Za-z0-9_-]{6,}\b|\b[0-9a-f]{16,}\b", RegexOptions.CultureInvariant)]
    private static partial Regex Identifier();

    [GeneratedRegex(@"\b\d{6,}\b", RegexOptions.CultureInvariant)]
    private static partial Regex LongNumber();

    /// <summary>
    /// What is kept of a route's last system prompt: hashes of its text and of its normalized form, and of its first
    /// volatile values, never the text itself (a multi-megabyte prompt on each of up to 100,000 routes held gigabytes).
    /// </summary>
    private sealed record Seen(ulong Raw, ulong Normalized, (string Kind, ulong Value)[] Values);

    /// <summary>The volatile values of a prompt kept to tell which one changed.</summary>
    private const int KeptValues = 64;

    private readonly ConcurrentDictionary<string, Seen> _last = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _warned = new(StringComparer.Ordinal);

    /// <summary>True at most once per route every <paramref name="interval"/> (the ledger row flags every call; the log does not repeat).</summary>
    public bool ShouldWarn(string route, TimeProvider time, TimeSpan interval)
    {
        var now = time.GetTimestamp();
        var last = _warned.GetOrAdd(route, long.MinValue);
        if (last != long.MinValue && time.GetElapsedTime(last, now) < interval) return false;
        _warned[route] = now;
        return true;
    }

    /// <summary>Replaces every volatile value with a placeholder; returns the values in order with their kinds.</summary>
    public static string Normalize(string text, List<(string Kind, string Value)>? found = null)
    {
        string Sub(Regex r, string kind, string s) => r.Replace(s, m => { found?.Add((kind, m.Value)); return "\u2423" + kind + "\u2423"; });
        var s = Sub(Timestamp(), "timestamp", text);
        s = Sub(Identifier(), "id", s);
        return Sub(LongNumber(), "number", s);
    }

    /// <summary>Compares this call's prefix text with the route's previous one.</summary>
    public VolatilePrefix? Observe(string route, string prefixText, long prefixTokens)
    {
        // the common case, a stable prompt, costs one hash of the text
        var raw = Hash(prefixText);
        if (_last.TryGetValue(route, out var same) && same.Raw == raw) return null;
        var found = new List<(string Kind, string Value)>();
        var normalized = Hash(Normalize(prefixText, found));
        var values = new (string Kind, ulong Value)[Math.Min(found.Count, KeptValues)];
        for (var i = 0; i < values.Length; i++) values[i] = (found[i].Kind, Hash(found[i].Value));
        var previous = _last.TryGetValue(route, out var p) ? p : null;
        _last[route] = new Seen(raw, normalized, values);
        if (_last.Count > 100_000) _last.Clear();
        if (previous is null || previous.Raw == raw || previous.Normalized != normalized) return null;
        for (var i = 0; i < Math.Min(values.Length, previous.Values.Length); i++)
            if (values[i].Value != previous.Values[i].Value) return new VolatilePrefix(found[i].Kind, found[i].Value, prefixTokens);
        return new VolatilePrefix(found.Count > 0 ? found[0].Kind : "value", found.Count > 0 ? found[0].Value : "", prefixTokens);
    }

    private static ulong Hash(string text) => System.IO.Hashing.XxHash64.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(text.AsSpan()));

    /// <summary>The opt-in rewrite: volatile values become numbered references and move to a block after the stable prefix.</summary>
    public static (string Stable, string Values)? MoveToEnd(string text)
    {
        var found = new List<(string Kind, string Value)>();
        Normalize(text, found);
        if (found.Count == 0) return null;
        var n = 0;
        string Ref(Regex r, string kind, string s) => r.Replace(s, _ => $"[{kind} {++n}]");
        var stable = Ref(LongNumber(), "number", Ref(Identifier(), "id", Ref(Timestamp(), "timestamp", text)));
        // numbering follows the replacement order above, so list the values the same way
        var ordered = new List<(string Kind, string Value)>();
        ordered.AddRange(found.Where(f => f.Kind == "timestamp"));
        ordered.AddRange(found.Where(f => f.Kind == "id"));
        ordered.AddRange(found.Where(f => f.Kind == "number"));
        var values = new StringBuilder("Values for this request: ");
        for (var i = 0; i < ordered.Count; i++) values.Append(i == 0 ? "" : "; ").Append('[').Append(ordered[i].Kind).Append(' ').Append(i + 1).Append("] = ").Append(ordered[i].Value);
        return (stable, values.ToString());
    }
}
