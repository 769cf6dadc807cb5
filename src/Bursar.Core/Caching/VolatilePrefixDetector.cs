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

    private readonly ConcurrentDictionary<string, (string Raw, string Normalized)> _last = new(StringComparer.Ordinal);
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
        // the common case, a stable prompt, costs one string comparison
        if (_last.TryGetValue(route, out var same) && string.Equals(same.Raw, prefixText, StringComparison.Ordinal)) return null;
        var found = new List<(string Kind, string Value)>();
        var normalized = Normalize(prefixText, found);
        var previous = _last.TryGetValue(route, out var p) ? p : default;
        _last[route] = (prefixText, normalized);
        if (_last.Count > 100_000) _last.Clear();
        if (previous.Raw is null || previous.Raw == prefixText || previous.Normalized != normalized) return null;
        var prevFound = new List<(string Kind, string Value)>();
        Normalize(previous.Raw, prevFound);
        for (var i = 0; i < Math.Min(found.Count, prevFound.Count); i++)
            if (found[i].Value != prevFound[i].Value) return new VolatilePrefix(found[i].Kind, found[i].Value, prefixTokens);
        return new VolatilePrefix(found.Count > 0 ? found[0].Kind : "value", found.Count > 0 ? found[0].Value : "", prefixTokens);
    }

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
