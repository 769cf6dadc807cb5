using Bursar.Core.Usage;

namespace Bursar.Core.Pricing;

/// <summary>The cost of one call, per token class, in exact decimal USD.</summary>
public readonly record struct CostBreakdown(
    decimal Input,
    decimal CacheRead,
    decimal CacheWrite5m,
    decimal CacheWrite1h,
    decimal Output,
    decimal Reasoning)
{
    public decimal Total => Input + CacheRead + CacheWrite5m + CacheWrite1h + Output + Reasoning;
}

public static class CostCalculator
{
    private const decimal PerMillion = 1_000_000m;

    /// <summary>
    /// Bills <paramref name="usage"/> as the provider does: long-context tiers switch the whole request,
    /// batch halves every class, reasoning tokens bill at the reasoning rate when one exists (else output).
    /// </summary>
    public static CostBreakdown Compute(ModelPrice price, in TokenUsage usage, bool batch = false)
    {
        var r = price.RatesFor(usage.TotalInputTokens, batch);
        var reasoningRate = r.Reasoning;
        var plainOutput = reasoningRate is null ? usage.OutputTokens : Math.Max(0, usage.OutputTokens - usage.ReasoningTokens);
        return new CostBreakdown(
            Input: usage.InputTokens * r.Input / PerMillion,
            CacheRead: usage.CacheReadTokens * (r.CacheRead ?? r.Input) / PerMillion,
            CacheWrite5m: usage.CacheWrite5mTokens * (r.CacheWrite5m ?? r.Input) / PerMillion,
            CacheWrite1h: usage.CacheWrite1hTokens * (r.CacheWrite1h ?? r.CacheWrite5m ?? r.Input) / PerMillion,
            Output: plainOutput * r.Output / PerMillion,
            Reasoning: reasoningRate is null ? 0m : usage.ReasoningTokens * reasoningRate.Value / PerMillion);
    }

    /// <summary>What the same tokens would have cost with no prompt caching: every input token at the input rate.</summary>
    /// <summary>
    /// The one prompt-caching saving rule every report uses (the ledger's <c>SavingPromptCache</c>, <c>report --cache</c>,
    /// <c>simulate</c>): what the same tokens would have cost uncached minus what they cost, i.e. the read discount minus
    /// the write premium; negative when writes are never read back. Zero for a call without cache reads or writes.
    /// </summary>
    public static decimal PromptCacheSaving(ModelPrice price, in TokenUsage usage, bool batch = false) =>
        usage.CacheReadTokens == 0 && usage.CacheWriteTokens == 0 ? 0m : ComputeUncached(price, usage, batch) - Compute(price, usage, batch).Total;

    public static decimal ComputeUncached(ModelPrice price, in TokenUsage usage, bool batch = false)
    {
        var flat = usage with { InputTokens = usage.TotalInputTokens, CacheReadTokens = 0, CacheWrite5mTokens = 0, CacheWrite1hTokens = 0 };
        return Compute(price, flat, batch).Total;
    }
}
