using System.Collections.Frozen;

namespace Bursar.Core.Pricing;

/// <summary>The result of a price lookup: a price, or the fact that the model is unpriced (never $0).</summary>
public readonly record struct PriceLookup(string RequestedModel, ModelPrice? Price)
{
    public bool IsPriced => Price is not null;
}

/// <summary>
/// An immutable catalog of model prices. Lookups resolve exact ids, aliases, dated ids
/// (<c>claude-sonnet-4-5-20250929</c>, <c>gpt-4.1-2025-04-14</c>) and provider prefixes (<c>anthropic/…</c>).
/// Later layers override earlier ones: built-in, then imported, then configuration.
/// </summary>
public sealed class PriceCatalog
{
    private readonly FrozenDictionary<string, ModelPrice> _byId;

    public PriceCatalog(IEnumerable<ModelPrice> prices)
    {
        var map = new Dictionary<string, ModelPrice>(StringComparer.OrdinalIgnoreCase);
        foreach (var p in prices)
        {
            map[p.Model] = p;
        }
        // aliases never override a model that has its own entry
        foreach (var p in map.Values.ToArray())
        {
            foreach (var a in p.Aliases)
            {
                map.TryAdd(a, p);
            }
        }
        _byId = map.ToFrozenDictionary(StringComparer.OrdinalIgnoreCase);
        Models = map.Values.Distinct().OrderBy(p => p.Provider, StringComparer.Ordinal).ThenBy(p => p.Model, StringComparer.Ordinal).ToArray();
    }

    public static PriceCatalog Empty { get; } = new([]);

    /// <summary>Every distinct priced model, sorted by provider then id.</summary>
    public IReadOnlyList<ModelPrice> Models { get; }

    public int Count => Models.Count;

    public PriceCatalog With(IEnumerable<ModelPrice> overrides) => new(Models.Concat(overrides));

    public PriceLookup Find(string model)
    {
        if (string.IsNullOrEmpty(model)) return new PriceLookup(model ?? "", null);
        if (_byId.TryGetValue(model, out var p)) return new PriceLookup(model, p);
        var slash = model.LastIndexOf('/');
        if (slash >= 0 && slash < model.Length - 1 && _byId.TryGetValue(model[(slash + 1)..], out p)) return new PriceLookup(model, p);
        var undated = StripDateSuffix(model);
        if (undated is not null && _byId.TryGetValue(undated, out p)) return new PriceLookup(model, p);
        return new PriceLookup(model, null);
    }

    /// <summary>Strips <c>-YYYYMMDD</c> or <c>-YYYY-MM-DD</c> from the end of a model id; null when there is none.</summary>
    internal static string? StripDateSuffix(string model)
    {
        var s = model.AsSpan();
        if (s.Length > 9 && s[^9] == '-' && AllDigits(s[^8..])) return model[..^9];
        if (s.Length > 11 && s[^11] == '-' && AllDigits(s[^10..^6]) && s[^6] == '-' && AllDigits(s[^5..^3]) && s[^3] == '-' && AllDigits(s[^2..]))
            return model[..^11];
        return null;

        static bool AllDigits(ReadOnlySpan<char> x)
        {
            foreach (var c in x) if (c is < '0' or > '9') return false;
            return true;
        }
    }
}
