using System.Diagnostics;
using System.Text.Json.Nodes;
using BenchmarkDotNet.Attributes;
using Bursar.Core.Routing;

namespace Bursar.Benchmarks;

/// <summary>
/// The complexity router's decision on the request path: read the newest user turn from the body DOM, score it, place it in the
/// calibration and pick the ladder rung. Prompts are RouteLLM's MMLU and GSM8K prompts (read from ../shared/data).
/// </summary>
[MemoryDiagnoser]
public class RouterBenchmarks
{
    private JsonObject[] _bodies = [];
    private string[] _tasks = [];
    private readonly RoutePolicy _route = new() { Name = "ladder", Ladder = ["gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1"], StrongShare = 0.3 };
    private int _i;

    [GlobalSetup]
    public void Setup() => (_bodies, _tasks) = Load(512);

    internal static (JsonObject[] Bodies, string[] Tasks) Load(int n)
    {
        var root = AppContext.BaseDirectory;
        var dir = new DirectoryInfo(root);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        var data = Path.Combine(dir!.FullName, "..", "shared", "data", "routing");
        var prompts = RoutingDataset.Load(Path.Combine(data, "mmlu")).Concat(RoutingDataset.Load(Path.Combine(data, "gsm8k"))).ToArray();
        new Random(3).Shuffle(prompts);
        var pick = prompts.Take(n).ToArray();
        return (pick.Select(p => new JsonObject
        {
            ["model"] = "gpt-4.1",
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = "Answer carefully." }, new JsonObject { ["role"] = "user", ["content"] = p.Prompt }),
        }).ToArray(), pick.Select(p => p.Category).ToArray());
    }

    [Benchmark]
    public string Decide()
    {
        var i = _i++ & (_bodies.Length - 1);
        return Decide(_bodies[i], _tasks[i], _route);
    }

    internal static string Decide(JsonObject body, string task, RoutePolicy route)
    {
        var router = ComplexityRouter.Default;
        var (text, turns) = PromptText.LastUser(body);
        var score = router.Score(text, task, Math.Max(1, turns));
        return route.Rung(router.QuantileOf(score)).Model;
    }

    /// <summary><c>router-percentiles</c>: p50 / p99 / max of single decisions over 20,000 calls (prompts cycled), after warm-up.</summary>
    public static void Percentiles()
    {
        var (bodies, tasks) = Load(2048);
        var route = new RoutePolicy { Name = "ladder", Ladder = ["gpt-4.1-nano", "gpt-4.1-mini", "gpt-4.1"], StrongShare = 0.3 };
        for (var i = 0; i < 20_000; i++) Decide(bodies[i % bodies.Length], tasks[i % tasks.Length], route);
        var times = new double[20_000];
        for (var i = 0; i < times.Length; i++)
        {
            var t0 = Stopwatch.GetTimestamp();
            Decide(bodies[i % bodies.Length], tasks[i % tasks.Length], route);
            times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(times);
        Console.WriteLine($"router decision over {times.Length:N0} calls ({bodies.Length:N0} MMLU/GSM8K prompts, mean {bodies.Average(b => PromptText.LastUser(b).Text.Length):N0} chars): " +
            $"p50 {times[times.Length / 2]:F4} ms, p99 {times[(int)(times.Length * 0.99)]:F4} ms, max {times[^1]:F4} ms");
    }
}
