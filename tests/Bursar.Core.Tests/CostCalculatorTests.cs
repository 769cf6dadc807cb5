using Bursar.Core.Pricing;
using Bursar.Core.Usage;

namespace Bursar.Core.Tests;

public sealed class CostCalculatorTests
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    private static ModelPrice Price(string model) => Catalog.Find(model).Price ?? throw new InvalidOperationException(model);

    [Fact]
    public void Anthropic_bills_every_input_class_separately()
    {
        // Sonnet 4.5: in 3, 5m write 3.75, 1h write 6, read 0.30, out 15 (USD / MTok)
        var usage = TokenUsage.FromAnthropic(inputTokens: 1000, cacheCreationTokens: 7000, cacheReadTokens: 2000, outputTokens: 500, ephemeral5m: 3000, ephemeral1h: 4000);
        var cost = CostCalculator.Compute(Price("claude-sonnet-4-5"), usage);
        Assert.Equal(0.003m, cost.Input);
        Assert.Equal(0.0006m, cost.CacheRead);
        Assert.Equal(0.01125m, cost.CacheWrite5m);
        Assert.Equal(0.024m, cost.CacheWrite1h);
        Assert.Equal(0.0075m, cost.Output);
        Assert.Equal(0.04635m, cost.Total);
    }

    [Fact]
    public void Anthropic_creation_without_ttl_split_bills_as_five_minute_writes()
    {
        var usage = TokenUsage.FromAnthropic(inputTokens: 0, cacheCreationTokens: 1_000_000, cacheReadTokens: 0, outputTokens: 0);
        Assert.Equal(1_000_000, usage.CacheWrite5mTokens);
        Assert.Equal(1.25m, CostCalculator.Compute(Price("claude-haiku-4-5"), usage).Total);
    }

    [Fact]
    public void OpenAI_prompt_tokens_include_cached_tokens()
    {
        // gpt-4.1: in 2, cached 0.50, out 8. prompt 1200 of which 1024 cached.
        var usage = TokenUsage.FromOpenAI(promptTokens: 1200, cachedTokens: 1024, completionTokens: 50);
        Assert.Equal(176, usage.InputTokens);
        Assert.Equal(1024, usage.CacheReadTokens);
        var cost = CostCalculator.Compute(Price("gpt-4.1"), usage);
        Assert.Equal((176m * 2 + 1024m * 0.5m + 50m * 8) / 1_000_000m, cost.Total);
        Assert.Equal(0.001264m, cost.Total);
    }

    [Fact]
    public void Reasoning_tokens_bill_as_output_unless_a_reasoning_rate_exists()
    {
        var usage = TokenUsage.FromOpenAI(promptTokens: 100, cachedTokens: 0, completionTokens: 1000, reasoningTokens: 800);
        Assert.Equal((100m * 1.10m + 1000m * 4.40m) / 1_000_000m, CostCalculator.Compute(Price("o4-mini"), usage).Total);

        var custom = new ModelPrice { Model = "r", Provider = "x", Rates = new PriceRates { Input = 1, Output = 10, Reasoning = 2 } };
        var c = CostCalculator.Compute(custom, usage);
        Assert.Equal(200m * 10 / 1_000_000m, c.Output);
        Assert.Equal(800m * 2 / 1_000_000m, c.Reasoning);
    }

    [Fact]
    public void Long_context_switches_the_whole_request_to_the_tier_rates()
    {
        var price = Price("claude-sonnet-4-5");
        var at = TokenUsage.FromAnthropic(200_000, 0, 0, 1000);
        var above = TokenUsage.FromAnthropic(150_000, 0, 50_001, 1000);
        Assert.Equal((200_000m * 3 + 1000m * 15) / 1_000_000m, CostCalculator.Compute(price, at).Total);
        // 200,001 total input: every class, output included, at 6 / 0.60 / 22.50
        Assert.Equal((150_000m * 6 + 50_001m * 0.60m + 1000m * 22.50m) / 1_000_000m, CostCalculator.Compute(price, above).Total);
    }

    [Fact]
    public void Batch_halves_every_class_including_cache()
    {
        var usage = TokenUsage.FromAnthropic(1000, 2000, 3000, 1000, 2000, 0);
        var full = CostCalculator.Compute(Price("claude-haiku-4-5"), usage).Total;
        Assert.Equal(full / 2, CostCalculator.Compute(Price("claude-haiku-4-5"), usage, batch: true).Total);
    }

    [Fact]
    public void Explicit_batch_rates_from_litellm_are_used()
    {
        var p = new ModelPrice
        {
            Model = "m", Provider = "openai",
            Rates = new PriceRates { Input = 2.5m, Output = 10, CacheRead = 1.25m },
            BatchRates = new PriceRates { Input = 1.25m, Output = 5 },
        };
        var u = TokenUsage.FromOpenAI(2000, 1000, 1000);
        Assert.Equal((1000m * 1.25m + 1000m * 0.625m + 1000m * 5) / 1_000_000m, CostCalculator.Compute(p, u, batch: true).Total);
    }

    [Fact]
    public void Uncached_counterfactual_bills_all_input_at_the_input_rate()
    {
        var usage = TokenUsage.FromAnthropic(100, 0, 10_000, 10);
        Assert.Equal((10_100m * 3 + 10m * 15) / 1_000_000m, CostCalculator.ComputeUncached(Price("claude-sonnet-4-5"), usage));
    }
}
