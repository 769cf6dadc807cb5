using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Advisor;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;

namespace Bursar.Core.Tests;

/// <summary>Reports never show an unknown cost as $0, and group a model's dated ids with it.</summary>
public sealed class ReportHonestyTests
{
    private static readonly PriceCatalog BuiltIn = new(PriceFiles.LoadBuiltIn());

    private static LedgerRecord R(string model, decimal? cost, bool estimated = false) => new()
    {
        Id = Guid.NewGuid().ToString("N"), Timestamp = DateTimeOffset.UnixEpoch, Dialect = "openai", Outcome = "ok", Feature = "f",
        ServedModel = model, Cost = cost, Priced = cost is not null, InputTokens = 10, OutputTokens = 5, UsageEstimated = estimated,
    };

    [Fact]
    public void Unpriced_cost_is_null_in_json_and_plus_unpriced_in_text()
    {
        var report = SpendReport.Build([R("gpt-4o", 0.25m), R("my-local-llm", null), R("my-local-llm", null)], ReportDimension.Model);
        var json = JsonNode.Parse(report.ToJson())!;
        var total = json["total"]!;
        Assert.Null(total["cost"]);
        Assert.Equal(0.25m, total["priced_cost"]!.GetValue<decimal>());
        Assert.Equal(2, total["unpriced_calls"]!.GetValue<long>());
        var local = json["rows"]!.AsArray().Single(r => r!["group"]!.GetValue<string>() == "my-local-llm")!;
        Assert.Null(local["cost"]);
        Assert.Null(local["cost_per_call"]);
        var priced = json["rows"]!.AsArray().Single(r => r!["group"]!.GetValue<string>() == "gpt-4o")!;
        Assert.Equal(0.25m, priced["cost"]!.GetValue<decimal>());
        // the admin API serializes the record itself (web defaults): the same null
        var web = JsonNode.Parse(JsonSerializer.Serialize(report, new JsonSerializerOptions(JsonSerializerDefaults.Web) { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }))!;
        Assert.Null(web["total"]!["cost"]);
        var table = report.ToTable();
        Assert.Contains("$0.2500 + unpriced", table);
        Assert.Contains("unknown", table);
        Assert.DoesNotContain(" + ?", table);
        Assert.Contains(",,", report.ToCsv().Split('\n').Single(l => l.StartsWith("my-local-llm", StringComparison.Ordinal)));
    }

    [Fact]
    public void Estimated_calls_are_marked_in_text()
    {
        var report = SpendReport.Build([R("gpt-4o", 0.25m, estimated: true), R("gpt-4o", 0.25m)], ReportDimension.Model);
        Assert.Equal(1, report.Total.EstimatedCalls);
        Assert.Contains("(estimated)", report.ToTable());
        Assert.Contains("1 calls are estimated", report.ToTable());
    }

    [Fact]
    public void Dated_ids_group_with_their_catalog_model()
    {
        var records = new[] { R("gpt-4o", 0.10m), R("gpt-4o-2024-08-06", 0.20m), R("openai/gpt-4o", 0.30m), R("claude-sonnet-4-5-20250929", 0.40m), R("my-local-llm", null) };
        var report = SpendReport.Build(records, ReportDimension.Model, BuiltIn);
        Assert.Equal(0.60m, report.Rows.Single(r => r.Group == "gpt-4o").Cost);
        Assert.Equal(3, report.Rows.Single(r => r.Group == "gpt-4o").Calls);
        Assert.DoesNotContain(report.Rows, r => r.Group.Contains("2024", StringComparison.Ordinal) || r.Group.Contains('/', StringComparison.Ordinal));
        Assert.Contains(report.Rows, r => r.Group == "my-local-llm");
        Assert.Contains(report.TopDrivers, d => d.Group == "f / gpt-4o" && d.Calls == 3);
    }
}

public sealed class WhatIfWindowTests
{
    private static readonly PriceCatalog BuiltIn = new(PriceFiles.LoadBuiltIn());

    private static LedgerRecord[] Burst(TimeSpan over, int calls)
    {
        var t0 = new DateTimeOffset(2026, 11, 2, 9, 0, 0, TimeSpan.Zero);
        return Enumerable.Range(0, calls).Select(i => new LedgerRecord
        {
            Id = "c" + i, Timestamp = t0 + over * i / calls, Dialect = "openai", Outcome = "ok", Feature = "f", ServedModel = "gpt-4o",
            InputTokens = 1000, OutputTokens = 200, Priced = true, Cost = 0.0045m,
        }).ToArray();
    }

    [Fact]
    public void A_fifteen_minute_burst_says_it_is_too_short_to_extrapolate_and_what_it_assumed()
    {
        var records = Burst(TimeSpan.FromMinutes(15), 155);
        var ladder = WhatIfSimulator.Run(records, BuiltIn, new WhatIfAssumptions(), records[0].Timestamp, records[^1].Timestamp.AddSeconds(6));
        Assert.True(ladder.TooShortToExtrapolate);
        var text = ladder.ToTable();
        Assert.Contains("too short to extrapolate", text);
        Assert.Contains("ASSUME", text);
        Assert.Contains("15 minutes", text);
    }

    [Fact]
    public void Two_days_of_traffic_extrapolate_without_the_warning()
    {
        var records = Burst(TimeSpan.FromDays(2), 500);
        var ladder = WhatIfSimulator.Run(records, BuiltIn, new WhatIfAssumptions(), records[0].Timestamp, records[^1].Timestamp.AddMinutes(6));
        Assert.False(ladder.TooShortToExtrapolate);
        Assert.DoesNotContain("too short to extrapolate", ladder.ToTable());
    }
}
