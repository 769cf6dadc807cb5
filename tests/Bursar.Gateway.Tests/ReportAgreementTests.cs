using System.Net;
using Bursar.Core.Advisor;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Tests;

/// <summary>One workload, three reports: the spend report's prompt-caching saving, `report --cache` and `simulate` say the same.</summary>
public sealed class ReportAgreementTests
{
    [Fact]
    public async Task Spend_report_cache_report_and_simulate_agree_on_the_prompt_caching_saving()
    {
        var gw = new ConfiguredGateway([]);
        await gw.InitializeAsync();
        try
        {
            // OpenAI caches a repeated prefix of 1,024+ tokens by itself (no breakpoints Bursar placed)
            var system = string.Join(" ", Enumerable.Range(1, 160).Select(i => $"Rule {i}: review every change for correctness, security and clarity before approving it."));
            for (var i = 0; i < 6; i++)
            {
                var body = System.Text.Json.JsonSerializer.Serialize(new
                {
                    model = "gpt-4.1",
                    messages = new object[] { new { role = "system", content = system }, new { role = "user", content = $"Review diff number {i}: renamed a variable." } },
                });
                using var req = gw.Post("/v1/chat/completions", body, feature: "code-review");
                using var resp = await gw.Http.SendAsync(req);
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            }
            var rows = await gw.LedgerAsync("code-review", 6);
            Assert.True(rows.Sum(r => r.CacheReadTokens) > 0, "the Simulator should have served cached prompt tokens");
            var catalog = gw.Services.GetRequiredService<PriceCatalog>();

            var spend = await SpendReport.QueryAsync(gw.Store, ReportDimension.Feature, rows.Min(r => r.Timestamp).AddHours(-1), DateTimeOffset.UtcNow.AddHours(1), default, catalog);
            var spendSaving = spend.Savings.Single(s => s.Lever == "prompt caching").Saved;
            var cacheSaving = CacheReport.Build(rows, catalog).Rows.Sum(r => r.NetSavingUsd);
            var ladder = WhatIfSimulator.Run(rows, catalog, new WhatIfAssumptions(), rows.Min(r => r.Timestamp), rows.Max(r => r.Timestamp).AddMinutes(1));

            Assert.True(spendSaving > 0m, $"report shows {spendSaving} for {rows.Sum(r => r.CacheReadTokens)} cached tokens");
            Assert.Equal(cacheSaving, spendSaving);
            Assert.Equal(cacheSaving, ladder.PromptCacheAlreadySaved);
            var caching = ladder.Steps.Single(s => s.Lever == "prompt caching").Assumption;
            Assert.DoesNotContain("no repeated prefix long enough", caching);
            Assert.Contains("already caching", caching);
            Assert.Contains(SpendReport.Money(cacheSaving), spend.ToTable());
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }
}
