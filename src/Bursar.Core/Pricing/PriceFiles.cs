using System.Text.Json;

namespace Bursar.Core.Pricing;

/// <summary>Reads prices from Bursar's own catalog format (USD per million tokens) and from LiteLLM's price file (USD per token).</summary>
public static class PriceFiles
{
    private const decimal PerMillion = 1_000_000m;

    /// <summary>The catalog compiled into Bursar: current Anthropic, OpenAI and Gemini models.</summary>
    public static IReadOnlyList<ModelPrice> LoadBuiltIn()
    {
        using var s = typeof(PriceFiles).Assembly.GetManifestResourceStream("Bursar.Core.Pricing.builtin-prices.json")
            ?? throw new InvalidOperationException("The built-in price catalog resource is missing from Bursar.Core.");
        return ReadBursarFormat(s, "builtin");
    }

    /// <summary>
    /// Bursar's format: <c>{"models":[{"id","provider","aliases":[],"input","output","cacheRead","cacheWrite5m","cacheWrite1h","reasoning",
    /// "batchMultiplier","contextWindow","maxOutput","promptCacheMinTokens","longContext":[{"above",rates…}]}]}</c>, rates in USD per million tokens.
    /// </summary>
    public static IReadOnlyList<ModelPrice> ReadBursarFormat(Stream json, string source)
    {
        using var doc = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        var list = new List<ModelPrice>();
        foreach (var m in doc.RootElement.GetProperty("models").EnumerateArray())
        {
            var id = m.GetProperty("id").GetString() ?? throw new FormatException("A price entry has no id.");
            try
            {
                var tiers = new List<LongContextTier>();
                if (m.TryGetProperty("longContext", out var lc))
                {
                    foreach (var t in lc.EnumerateArray())
                        tiers.Add(new LongContextTier(t.GetProperty("above").GetInt64(), ReadRates(t, 1m)));
                }
                list.Add(new ModelPrice
                {
                    Model = id,
                    Provider = m.GetProperty("provider").GetString()!,
                    Rates = ReadRates(m, 1m),
                    LongContext = tiers,
                    BatchMultiplier = OptDecimal(m, "batchMultiplier", 1m) ?? 0.5m,
                    Aliases = m.TryGetProperty("aliases", out var a) ? a.EnumerateArray().Select(x => x.GetString()!).ToArray() : [],
                    ContextWindow = OptLong(m, "contextWindow"),
                    MaxOutputTokens = OptLong(m, "maxOutput"),
                    PromptCacheMinTokens = OptLong(m, "promptCacheMinTokens"),
                    Source = source,
                });
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new FormatException($"Price entry '{id}' in {source} is invalid: {e.Message}", e);
            }
        }
        return list;
    }

    /// <summary>
    /// LiteLLM's <c>model_prices_and_context_window.json</c>: costs per token. Skips <c>sample_spec</c>, non-object values,
    /// non-chat modes and entries without both input and output cost. Tier fields <c>*_above_Nk_tokens</c> become long-context tiers.
    /// </summary>
    public static IReadOnlyList<ModelPrice> ReadLiteLlm(Stream json, out int skipped)
    {
        using var doc = JsonDocument.Parse(json);
        var list = new List<ModelPrice>();
        skipped = 0;
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            var e = prop.Value;
            if (prop.Name == "sample_spec" || e.ValueKind != JsonValueKind.Object) { skipped++; continue; }
            var mode = e.TryGetProperty("mode", out var md) && md.ValueKind == JsonValueKind.String ? md.GetString() : "chat";
            if (mode is not ("chat" or "responses" or "completion")) { skipped++; continue; }
            var input = OptDecimal(e, "input_cost_per_token", PerMillion);
            var output = OptDecimal(e, "output_cost_per_token", PerMillion);
            if (input is null || output is null) { skipped++; continue; }
            var rates = new PriceRates
            {
                Input = input.Value,
                Output = output.Value,
                CacheRead = OptDecimal(e, "cache_read_input_token_cost", PerMillion),
                CacheWrite5m = OptDecimal(e, "cache_creation_input_token_cost", PerMillion),
                CacheWrite1h = OptDecimal(e, "cache_creation_input_token_cost_above_1hr", PerMillion),
                Reasoning = OptDecimal(e, "output_cost_per_reasoning_token", PerMillion),
            };
            var tiers = new List<LongContextTier>();
            foreach (var (suffix, above) in TierSuffixes)
            {
                var ti = OptDecimal(e, "input_cost_per_token_above_" + suffix, PerMillion);
                if (ti is null) continue;
                tiers.Add(new LongContextTier(above, new PriceRates
                {
                    Input = ti.Value,
                    Output = OptDecimal(e, "output_cost_per_token_above_" + suffix, PerMillion) ?? rates.Output,
                    CacheRead = OptDecimal(e, "cache_read_input_token_cost_above_" + suffix, PerMillion) ?? rates.CacheRead,
                    CacheWrite5m = OptDecimal(e, "cache_creation_input_token_cost_above_" + suffix, PerMillion) ?? rates.CacheWrite5m,
                    CacheWrite1h = OptDecimal(e, "cache_creation_input_token_cost_above_1hr_above_" + suffix, PerMillion) ?? rates.CacheWrite1h,
                    Reasoning = rates.Reasoning,
                }));
            }
            tiers.Sort((a, b) => a.AboveInputTokens.CompareTo(b.AboveInputTokens));
            var bi = OptDecimal(e, "input_cost_per_token_batches", PerMillion);
            var bo = OptDecimal(e, "output_cost_per_token_batches", PerMillion);
            list.Add(new ModelPrice
            {
                Model = prop.Name,
                Provider = e.TryGetProperty("litellm_provider", out var lp) && lp.ValueKind == JsonValueKind.String ? lp.GetString()! : "unknown",
                Rates = rates,
                LongContext = tiers,
                BatchRates = bi is not null && bo is not null ? new PriceRates { Input = bi.Value, Output = bo.Value } : null,
                ContextWindow = OptLong(e, "max_input_tokens"),
                MaxOutputTokens = OptLong(e, "max_output_tokens"),
                PromptCacheMinTokens = OptLong(e, "prompt_cache_min_tokens"),
                Source = "litellm",
            });
        }
        return list;
    }

    private static readonly (string Suffix, long Above)[] TierSuffixes =
        [("128k_tokens", 128_000), ("200k_tokens", 200_000), ("256k_tokens", 256_000), ("272k_tokens", 272_000), ("512k_tokens", 512_000)];

    private static PriceRates ReadRates(JsonElement e, decimal scale) => new()
    {
        Input = OptDecimal(e, "input", scale) ?? throw new FormatException("missing 'input' rate"),
        Output = OptDecimal(e, "output", scale) ?? throw new FormatException("missing 'output' rate"),
        CacheRead = OptDecimal(e, "cacheRead", scale),
        CacheWrite5m = OptDecimal(e, "cacheWrite5m", scale),
        CacheWrite1h = OptDecimal(e, "cacheWrite1h", scale),
        Reasoning = OptDecimal(e, "reasoning", scale),
    };

    private static decimal? OptDecimal(JsonElement e, string name, decimal scale)
    {
        if (!e.TryGetProperty(name, out var v)) return null;
        decimal d;
        switch (v.ValueKind)
        {
            case JsonValueKind.Number when v.TryGetDecimal(out d):
                break;
            case JsonValueKind.String when decimal.TryParse(v.GetString(), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out d):
                break;
            default:
                return null;
        }
        return Normalize(d * scale);
    }

    private static long? OptLong(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var l) ? l : null;

    /// <summary>Removes trailing zeros so 3.000000 prints as 3.</summary>
    public static decimal Normalize(decimal d) => d / 1.000000000000000000000000000000000m;
}
