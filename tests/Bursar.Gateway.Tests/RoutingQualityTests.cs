using System.Net;
using System.Text.Json.Nodes;
using Bursar.Core.Routing;
using Xunit.Abstractions;

namespace Bursar.Gateway.Tests;

/// <summary>
/// Routing quality end to end: the Simulator answers RouteLLM's labeled MMLU prompts as the recorded weak and strong models did,
/// the gateway's classifier ladder routes them, and the quality recovered is measured from the answers that come back.
/// The router is trained on one half of the prompts and tested on the other.
/// </summary>
public sealed class RoutingQualityTests(ITestOutputHelper output)
{
    private static string Mmlu()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        return Path.GetFullPath(Path.Combine(dir!.FullName, "..", "shared", "data", "routing", "mmlu"));
    }

    [Fact]
    public async Task The_classifier_ladder_recovers_more_quality_than_its_share_of_strong_calls()
    {
        var data = RoutingDataset.Load(Mmlu()).ToArray();
        new Random(42).Shuffle(data);
        var train = data.Take(data.Length / 2).ToArray();
        var test = data.Skip(data.Length / 2).Take(1200).ToArray();
        var model = Path.Combine(Path.GetTempPath(), $"bursar-router-{Guid.NewGuid():N}.json");
        ComplexityRouter.Train(train).Calibrated(train).Save(model);
        var gw = new ConfiguredGateway([
            $"--Bursar:Simulator:LabeledSets:0={Mmlu()}", $"--Bursar:Routing:RouterModel={model}",
            "--Bursar:Routing:Routes:0:Name=mmlu", "--Bursar:Routing:Routes:0:Feature=mmlu-eval", "--Bursar:Routing:Routes:0:Ladder:0=gpt-4.1-mini",
            "--Bursar:Routing:Routes:0:Ladder:1=gpt-4.1", "--Bursar:Routing:Routes:0:StrongShare=0.5", "--Bursar:Routing:Routes:0:ConfidenceMargin=0",
        ]);
        await gw.InitializeAsync();
        try
        {
            var correct = 0;
            var strongCalls = 0;
            await Parallel.ForEachAsync(test, new ParallelOptions { MaxDegreeOfParallelism = 8 }, async (p, ct) =>
            {
                var body = new JsonObject { ["model"] = "gpt-4.1", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = p.Prompt }) };
                using var req = gw.Post("/v1/chat/completions", body.ToJsonString(), feature: "mmlu-eval");
                req.Headers.Add("x-bursar-task", p.Category);
                using var resp = await gw.Http.SendAsync(req, ct);
                Assert.Equal(HttpStatusCode.OK, resp.StatusCode);
                var answer = JsonNode.Parse(await resp.Content.ReadAsStringAsync(ct))!;
                var text = (string)answer["choices"]![0]!["message"]!["content"]!;
                Assert.True(text.StartsWith("[[graded:", StringComparison.Ordinal), text);
                if (text.StartsWith("[[graded:correct]]", StringComparison.Ordinal)) Interlocked.Increment(ref correct);
                if ((string)answer["model"]! == "gpt-4.1") Interlocked.Increment(ref strongCalls);
            });
            double qWeak = test.Average(p => p.WeakCorrect ? 1.0 : 0), qStrong = test.Average(p => p.StrongCorrect ? 1.0 : 0);
            var qRouted = correct / (double)test.Length;
            var share = strongCalls / (double)test.Length;
            var pgr = (qRouted - qWeak) / (qStrong - qWeak);
            output.WriteLine($"{test.Length} held-out MMLU prompts: weak {qWeak:P1}, strong {qStrong:P1}, routed {qRouted:P1} with {share:P1} strong calls: PGR {pgr:F3} (a random router: ~{share:F3})");
            Assert.InRange(share, 0.35, 0.65); // the calibrated share holds on unseen prompts
            Assert.True(pgr > share + 0.1, $"PGR {pgr:F3} at {share:P1} strong calls");
            var rows = await gw.LedgerAsync("mmlu-eval", test.Length);
            Assert.Equal(test.Length - strongCalls, rows.Count(r => r.SavingRouting > 0)); // every call sent down credits its saving
            Assert.All(rows, r => Assert.Contains("classifier: route 'mmlu'", r.RoutingReason));
        }
        finally
        {
            await gw.DisposeAsync();
            File.Delete(model);
        }
    }
}
