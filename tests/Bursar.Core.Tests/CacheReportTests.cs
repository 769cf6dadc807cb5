using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;

namespace Bursar.Core.Tests;

public sealed class CacheReportTests
{
    private static LedgerRecord R(string feature, long input, long read, long write5m, decimal responseSaving = 0) => new()
    {
        Id = Guid.NewGuid().ToString("N"), Timestamp = DateTimeOffset.UnixEpoch, Dialect = "anthropic", Outcome = "ok",
        Feature = feature, ServedModel = "claude-sonnet-4-5", InputTokens = input, CacheReadTokens = read, CacheWrite5mTokens = write5m,
        OutputTokens = 10, Priced = true, Cost = 0, SavingResponseCache = responseSaving,
    };

    [Fact]
    public void Net_saving_is_the_read_discount_minus_the_write_premium_and_losing_routes_are_flagged()
    {
        var catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        var report = CacheReport.Build(
        [
            R("reused", 100, 0, 10_000), R("reused", 100, 10_000, 0), R("reused", 100, 10_000, 0),
            R("never-reused", 100, 0, 10_000), R("never-reused", 100, 0, 10_000),
            R("faq", 0, 0, 0, responseSaving: 0.02m),
        ], catalog);
        var reused = report.Rows.Single(r => r.Route == "reused / claude-sonnet-4-5");
        // Sonnet 4.5: reads save 3 - 0.30 = 2.70 / MTok, 5-minute writes cost 3.75 - 3 = 0.75 / MTok extra
        Assert.Equal((20_000m * 2.70m - 10_000m * 0.75m) / 1_000_000m, reused.NetSavingUsd);
        Assert.Equal(20_000m / 30_300m, reused.HitRatio);
        Assert.False(reused.CostsMoreThanItSaves);
        var losing = report.Rows.Single(r => r.Route.StartsWith("never-reused"));
        Assert.Equal(-20_000m * 0.75m / 1_000_000m, losing.NetSavingUsd);
        Assert.True(losing.CostsMoreThanItSaves);
        Assert.Contains("COSTS MORE THAN IT SAVES", report.ToTable());
        Assert.Equal(0.02m, report.Rows.Single(r => r.Route.StartsWith("faq")).ResponseCacheSavingUsd);
    }

    [Fact]
    public void A_call_with_cache_tokens_but_no_recorded_saving_is_costed_from_the_catalog_and_one_it_cannot_price_is_counted_not_costed()
    {
        var catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        var report = CacheReport.Build(
        [
            R("old", 100, 10_000, 0), // written by a version that did not record the saving
            R("old", 100, 0, 0) with { SavingPromptCache = 0.5m }, // a recorded saving is taken as it is
            R("house", 100, 10_000, 0) with { ServedModel = "zz-unpriced-house-model" },
            R("house", 100, 10_000, 0) with { ServedModel = "zz-unpriced-house-model", VolatilePrefix = "moved:date" },
            R("house", 100, 10_000, 0) with { ServedModel = "zz-unpriced-house-model", VolatilePrefix = "date" },
        ], catalog);
        var old = report.Rows.Single(r => r.Route == "old / claude-sonnet-4-5");
        Assert.Equal(0.5m + 10_000m * 2.70m / 1_000_000m, old.NetSavingUsd);
        Assert.Equal(0, old.UncostedCalls);
        var house = report.Rows.Single(r => r.Route == "house / zz-unpriced-house-model");
        Assert.Equal(0m, house.NetSavingUsd);
        Assert.Equal(3, house.UncostedCalls);
        Assert.Equal(1, house.VolatileCalls);
        Assert.Equal(3, report.UncostedCalls);
        Assert.Contains("3 calls not costed", report.ToTable(), StringComparison.Ordinal);
        Assert.Contains("NOTE: 3 calls carry cache tokens but no recorded saving", report.ToTable(), StringComparison.Ordinal);
    }
}
