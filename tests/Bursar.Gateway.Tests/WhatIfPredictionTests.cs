using System.Net;
using System.Text.Json.Nodes;
using Bursar.Core.Advisor;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Xunit.Abstractions;

namespace Bursar.Gateway.Tests;

/// <summary>A gateway with its own configuration and data directory.</summary>
public sealed class ConfiguredGateway(IEnumerable<string> extra) : GatewayFixture
{
    protected override IEnumerable<string> ExtraArgs => extra;
}

/// <summary>
/// The what-if simulator's predictions against reality: one workload is driven through the gateway and the Simulator with no levers,
/// the simulator predicts the cost after each lever, then each lever is switched on for real (cumulatively) and the same workload is
/// driven again. Every predicted step must land within 10% of the measured cost.
/// </summary>
public sealed class WhatIfPredictionTests(ITestOutputHelper output)
{
    private const string Model = "claude-sonnet-4-5";

    private static readonly string System = string.Join(' ', Enumerable.Range(0, 300).Select(i => $"Rule {i}: answer support questions politely and cite the policy section."));

    /// <summary>80 calls: classification with short answers and a verbose tail, analysis with longer ones.</summary>
    private static IReadOnlyList<(string Task, string Body)> Workload()
    {
        var rng = new Random(11);
        var list = new List<(string, string)>();
        for (var i = 0; i < 80; i++)
        {
            var task = i % 2 == 0 ? "classification" : "analysis";
            var tokens = task == "classification" ? (rng.Next(25) == 0 ? 1500 : rng.Next(5, 30)) : (rng.Next(25) == 0 ? 4000 : rng.Next(100, 400));
            var body = new JsonObject
            {
                ["model"] = Model, ["max_tokens"] = 4096, ["system"] = System,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = $"Ticket {i}: my order {rng.Next(100000)} is late. [[sim:tokens={tokens}]]" }),
            };
            list.Add((task, body.ToJsonString()));
        }
        return list;
    }

    private static async Task<(IReadOnlyList<LedgerRecord> Rows, decimal Cost)> DriveAsync(IEnumerable<string> config)
    {
        var gw = new ConfiguredGateway(config);
        await gw.InitializeAsync();
        try
        {
            var work = Workload();
            foreach (var (task, body) in work)
            {
                using var req = gw.Post("/v1/messages", body, feature: "support");
                req.Headers.Add("x-bursar-task", task);
                using var resp = await gw.Http.SendAsync(req);
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
            }
            var rows = await gw.LedgerAsync("support", work.Count);
            return (rows, rows.Sum(r => r.Cost!.Value));
        }
        finally
        {
            await gw.DisposeAsync();
        }
    }

    [Fact]
    public async Task Predicted_cost_after_each_lever_is_within_10_percent_of_the_cost_measured_with_it_on()
    {
        string[] off = ["--Bursar:PromptCache:PlaceBreakpoints=false"];
        var (baseline, baselineCost) = await DriveAsync(off);
        var catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        var assumptions = new WhatIfAssumptions();
        var ladder = WhatIfSimulator.Run(baseline, catalog, assumptions, baseline.Min(r => r.Timestamp), baseline.Max(r => r.Timestamp).AddSeconds(1));
        output.WriteLine(ladder.ToTable());
        Assert.Equal(baselineCost, ladder.BaselineWindowCost);

        // switch the levers on as the simulator assumed them: caps learned from the baseline, the tier table's route, breakpoints
        var caps = WhatIfSimulator.LearnCaps(baseline, assumptions);
        string[] capRoutes(bool route) =>
        [
            "--Bursar:Routing:Routes:0:Name=classification", "--Bursar:Routing:Routes:0:Task=classification", $"--Bursar:Routing:Routes:0:MaxTokens={caps["classification"]}",
            .. route ? new[] { "--Bursar:Routing:Routes:0:Model=claude-haiku-4-5" } : [],
            "--Bursar:Routing:Routes:1:Name=analysis", "--Bursar:Routing:Routes:1:Task=analysis", $"--Bursar:Routing:Routes:1:MaxTokens={caps["analysis"]}",
        ];
        var measured = new List<decimal>();
        foreach (var config in new[] { [.. off, .. capRoutes(false)], [.. off, .. capRoutes(true)], capRoutes(true) })
            measured.Add((await DriveAsync(config)).Cost);

        for (var i = 0; i < measured.Count; i++)
        {
            var predicted = ladder.Steps[i].WindowCost;
            output.WriteLine($"{ladder.Steps[i].Lever}: predicted {predicted:0.000000}, measured {measured[i]:0.000000} ({(predicted - measured[i]) / measured[i]:P1})");
            Assert.InRange(predicted, measured[i] * 0.9m, measured[i] * 1.1m);
        }
        // each lever really moved the bill, so the check above compares something
        Assert.True(measured[0] < baselineCost * 0.97m, "output caps should cut the bill");
        Assert.True(measured[1] < measured[0] * 0.8m, "routing classification to the small tier should cut the bill");
        Assert.True(measured[2] < measured[1] * 0.9m, "prompt caching should cut the bill");
    }
}
