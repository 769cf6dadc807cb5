using Bursar.Core.Pricing;

namespace Bursar.Core.Tests;

public sealed class PriceCatalogTests
{
    private static readonly PriceCatalog BuiltIn = new(PriceFiles.LoadBuiltIn());

    [Theory]
    [InlineData("claude-sonnet-4-5", "claude-sonnet-4-5")]
    [InlineData("claude-sonnet-4-5-20250929", "claude-sonnet-4-5")]
    [InlineData("CLAUDE-HAIKU-4-5-20251001", "claude-haiku-4-5")]
    [InlineData("gpt-4.1-2025-04-14", "gpt-4.1")]
    [InlineData("gpt-4o-mini-2024-07-18", "gpt-4o-mini")]
    [InlineData("anthropic/claude-opus-4-5", "claude-opus-4-5")]
    [InlineData("gemini/gemini-2.5-pro", "gemini-2.5-pro")]
    public void Aliases_and_dated_ids_resolve(string asked, string expected)
    {
        var found = BuiltIn.Find(asked);
        Assert.True(found.IsPriced, asked);
        Assert.Equal(expected, found.Price!.Model);
    }

    [Theory]
    [InlineData("gpt-9-preview")]
    [InlineData("")]
    [InlineData("my-local-llama")]
    public void Unknown_models_are_unpriced_not_free(string model)
    {
        var found = BuiltIn.Find(model);
        Assert.False(found.IsPriced);
        Assert.Null(found.Price);
    }

    [Fact]
    public void Later_layers_override_earlier_ones()
    {
        var custom = new ModelPrice { Model = "gpt-4o", Provider = "openai", Rates = new PriceRates { Input = 1, Output = 2 }, Source = "config" };
        var c = BuiltIn.With([custom]);
        Assert.Equal(1m, c.Find("gpt-4o").Price!.Rates.Input);
        Assert.Equal("config", c.Find("gpt-4o-2024-08-06").Price!.Source);
    }

    [Fact]
    public void Builtin_catalog_covers_the_three_providers_with_cache_rates()
    {
        Assert.Contains(BuiltIn.Models, m => m.Provider == "anthropic");
        Assert.Contains(BuiltIn.Models, m => m.Provider == "openai");
        Assert.Contains(BuiltIn.Models, m => m.Provider == "gemini");
        Assert.All(BuiltIn.Models.Where(m => m.Provider == "anthropic"), m =>
        {
            Assert.Equal(m.Rates.Input * 1.25m, m.Rates.CacheWrite5m);
            Assert.Equal(m.Rates.Input * 2m, m.Rates.CacheWrite1h);
            Assert.Equal(m.Rates.Input * 0.1m, m.Rates.CacheRead);
        });
    }

    [Fact]
    public void LiteLlm_file_imports_exact_decimal_prices()
    {
        using var s = File.OpenRead(SharedData.Path("litellm_model_prices.json"));
        var prices = PriceFiles.ReadLiteLlm(s, out var skipped);
        Assert.True(prices.Count > 1500, $"only {prices.Count} imported");
        Assert.True(skipped > 0);
        Assert.DoesNotContain(prices, p => p.Model == "sample_spec");
        var c = new PriceCatalog(prices);
        var sonnet = c.Find("claude-sonnet-4-5").Price!;
        Assert.Equal(3m, sonnet.Rates.Input);
        Assert.Equal(15m, sonnet.Rates.Output);
        Assert.Equal(0.3m, sonnet.Rates.CacheRead);
        Assert.Equal(3.75m, sonnet.Rates.CacheWrite5m);
        Assert.Equal(6m, sonnet.Rates.CacheWrite1h);
        var tier = Assert.Single(sonnet.LongContext);
        Assert.Equal(200_000, tier.AboveInputTokens);
        Assert.Equal(6m, tier.Rates.Input);
        Assert.Equal(22.5m, tier.Rates.Output);
        var mini = c.Find("gpt-4o-mini").Price!;
        Assert.Equal(0.15m, mini.Rates.Input);
        Assert.Equal(0.075m, mini.Rates.CacheRead);
        Assert.Equal("litellm", mini.Source);
    }

    [Fact]
    public void Malformed_bursar_price_entry_names_the_model()
    {
        using var s = new MemoryStream("""{"models":[{"id":"broken","provider":"x","output":1}]}"""u8.ToArray());
        var e = Assert.Throws<FormatException>(() => PriceFiles.ReadBursarFormat(s, "test"));
        Assert.Contains("broken", e.Message);
        Assert.Contains("input", e.Message);
    }
}
