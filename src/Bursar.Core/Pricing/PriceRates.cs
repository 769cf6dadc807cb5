namespace Bursar.Core.Pricing;

/// <summary>USD per million tokens for each token class. A null class bills at the input (or output) rate.</summary>
public sealed record PriceRates
{
    public required decimal Input { get; init; }
    public required decimal Output { get; init; }
    public decimal? CacheRead { get; init; }
    public decimal? CacheWrite5m { get; init; }
    public decimal? CacheWrite1h { get; init; }
    /// <summary>Rate for reasoning tokens when the provider prices them apart from output; null = output rate.</summary>
    public decimal? Reasoning { get; init; }

    public PriceRates Scale(decimal factor) => new()
    {
        Input = Input * factor,
        Output = Output * factor,
        CacheRead = CacheRead * factor,
        CacheWrite5m = CacheWrite5m * factor,
        CacheWrite1h = CacheWrite1h * factor,
        Reasoning = Reasoning * factor,
    };
}

/// <summary>A long-context tier: when a request's total input exceeds <see cref="AboveInputTokens"/>, the whole request bills at <see cref="Rates"/>.</summary>
public sealed record LongContextTier(long AboveInputTokens, PriceRates Rates);

/// <summary>The price of one model, as data.</summary>
public sealed record ModelPrice
{
    public required string Model { get; init; }
    public required string Provider { get; init; }
    public required PriceRates Rates { get; init; }
    public IReadOnlyList<LongContextTier> LongContext { get; init; } = [];
    /// <summary>Explicit batch rates; when null, batch bills at <see cref="BatchMultiplier"/> of the standard rates.</summary>
    public PriceRates? BatchRates { get; init; }
    public decimal BatchMultiplier { get; init; } = 0.5m;
    public IReadOnlyList<string> Aliases { get; init; } = [];
    public long? ContextWindow { get; init; }
    public long? MaxOutputTokens { get; init; }
    public long? PromptCacheMinTokens { get; init; }
    /// <summary>Where this price came from: builtin, litellm, config.</summary>
    public string Source { get; init; } = "builtin";

    /// <summary>True when every rate is zero (a local model): such calls never consume budget.</summary>
    public bool IsFree => Rates.Input == 0 && Rates.Output == 0;

    public PriceRates RatesFor(long totalInputTokens, bool batch)
    {
        var rates = Rates;
        for (var i = LongContext.Count - 1; i >= 0; i--)
        {
            if (totalInputTokens > LongContext[i].AboveInputTokens)
            {
                rates = LongContext[i].Rates;
                break;
            }
        }
        if (!batch) return rates;
        if (BatchRates is not null && ReferenceEquals(rates, Rates))
        {
            return BatchRates with
            {
                CacheRead = BatchRates.CacheRead ?? rates.CacheRead * BatchMultiplier,
                CacheWrite5m = BatchRates.CacheWrite5m ?? rates.CacheWrite5m * BatchMultiplier,
                CacheWrite1h = BatchRates.CacheWrite1h ?? rates.CacheWrite1h * BatchMultiplier,
            };
        }
        return rates.Scale(BatchMultiplier);
    }
}
