using System.Net;
using System.Text.Json.Nodes;
using Bursar.Core.Advisor;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Xunit.Abstractions;

namespace Bursar.Gateway.Tests;

/// <summary>
/// The what-if ladder's batch step against reality: one workload with a deferrable share (the "nightly" task, 30% of calls)
/// is driven through the gateway with the deferral stage off, the ladder predicts what batching that share saves, then the
/// same workload is driven with a route policy deferring the task and the saving is measured from the ledger.
/// </summary>
[Collection("batch")]
public sealed class BatchWhatIfTests(ITestOutputHelper output)
{
    /// <summary>60 calls of gpt-4o-mini: 18 nightly reports (deferrable), 42 chat turns; outputs of 100-140 tokens.</summary>
    private static IReadOnlyList<(string Task, string Body)> Workload()
    {
        var rng = new Random(7);
        return Enumerable.Range(0, 60).Select(i =>
        {
            var task = i % 10 < 3 ? "nightly" : "chat";
            var body = new JsonObject
            {
                ["model"] = "gpt-4o-mini", ["max_completion_tokens"] = 400,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = $"{task} item {i}: summarise account {rng.Next(100000)}. [[sim:tokens={rng.Next(100, 141)}]]" }),
            };
            return (task, body.ToJsonString());
        }).ToArray();
    }

    private async Task<IReadOnlyList<LedgerRecord>> DriveAsync(bool defer)
    {
        var dir = Path.Combine(Path.GetTempPath(), "bursar-whatif-batch-" + Guid.NewGuid().ToString("N"));
        string[] routes = defer ? ["--Bursar:Routing:Routes:0:Name=nightly", "--Bursar:Routing:Routes:0:Task=nightly", "--Bursar:Routing:Routes:0:Defer=01:00:00"] : [];
        var gw = await BatchHost.StartAsync(dir, ["--Bursar:Deferral:MaxWait=00:00:00.200", "--Bursar:Deferral:FlushInterval=00:00:00.050", "--Bursar:PromptCache:PlaceBreakpoints=false", .. routes]);
        try
        {
            var key = await gw.KeyAsync();
            var work = Workload();
            foreach (var (task, body) in work)
            {
                var (status, text, resp) = await DeferralGatewayTests.Call(gw.Http, key, "/v1/chat/completions", body, "reports", task: task);
                resp.Dispose();
                Assert.True(status == (defer && task == "nightly" ? HttpStatusCode.Accepted : HttpStatusCode.OK), $"{task}: {status} {text}");
            }
            var rows = await gw.RowsAsync(r => r.Feature == "reports", work.Count, waitMs: 30_000);
            Assert.Equal(work.Count, rows.Count);
            return rows;
        }
        finally
        {
            await gw.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task The_batch_steps_predicted_saving_is_within_10_percent_of_the_saving_measured_with_the_stage_on()
    {
        var off = await DriveAsync(defer: false);
        Assert.DoesNotContain(off, r => r.Batch);
        var baseline = off.Sum(r => r.Cost!.Value);
        var ladder = WhatIfSimulator.Run(off, new PriceCatalog(PriceFiles.LoadBuiltIn()), new WhatIfAssumptions(), off.Min(r => r.Timestamp), off.Max(r => r.Timestamp).AddSeconds(1));
        output.WriteLine(ladder.ToTable());
        var i = Array.IndexOf(WhatIfSimulator.Order, "batch");
        var predicted = ladder.Steps[i - 1].WindowCost - ladder.Steps[i].WindowCost;

        var on = await DriveAsync(defer: true);
        var measured = baseline - on.Sum(r => r.Cost!.Value);
        output.WriteLine($"batch step: predicted saving {predicted:0.00000000}, measured {measured:0.00000000} ({(predicted - measured) / measured:P1}); baseline {baseline:0.00000000}");
        Assert.True(measured > 0, "batching the nightly share should cut the bill");
        Assert.InRange(predicted, measured * 0.9m, measured * 1.1m);
        // the ledger says the same: the nightly rows ran at the batch rate and credit the saving the stage made
        Assert.All(on.Where(r => r.Task == "nightly"), r => Assert.True(r.Batch));
        Assert.InRange(on.Sum(r => r.SavingBatch), measured * 0.9m, measured * 1.1m);

        // the report shows the batch share and the batch saving per route
        var report = SpendReport.Build(on, ReportDimension.Route);
        var nightly = Assert.Single(report.Rows, r => r.Group == "nightly");
        Assert.Equal((18, 1m), (nightly.BatchCalls, nightly.BatchShare));
        Assert.Equal(on.Where(r => r.Route == "nightly").Sum(r => r.SavingBatch), nightly.SavingBatch);
        Assert.Equal(0, report.Rows.Single(r => r.Group != "nightly").BatchCalls);
        Assert.Contains("Batch share and saving per route", report.ToTable());
        Assert.Contains("\"batch_share\": 1", report.ToJson());
    }
}
