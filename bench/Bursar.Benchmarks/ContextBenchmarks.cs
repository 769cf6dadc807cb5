using System.Text.Json.Nodes;
using BenchmarkDotNet.Attributes;
using Bursar.Core.Context;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Bursar.Core.Tokens;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Benchmarks;

/// <summary>
/// The context stage on the request path: a call it does not touch (no route opts in; a compacting route below its trigger), the
/// compaction of a 30-turn agent conversation (tool calls and results; the summary call excluded: summarize needs none on a stored
/// checkpoint), and document compression of a real page (a Mozilla readability page read from ../shared/data).
/// </summary>
[MemoryDiagnoser]
public class ContextBenchmarks
{
    private ContextStage _stage = null!;
    private LeverCall _untouched = null!, _belowTrigger = null!;
    private JsonObject _conversation = null!;
    private Compactor _compactor = null!;
    private DocumentCompressor _compressor = null!;
    private string _page = "";
    private static readonly LeverNext Next = static (_, _) => ValueTask.CompletedTask;
    private readonly CompactionPolicy _prune = new() { Strategy = CompactionPolicy.PruneToolResults, KeepTurns = 3, TriggerTokens = 0 };
    private readonly CompactionPolicy _sliding = new() { Strategy = CompactionPolicy.SlidingWindow, KeepTurns = 3, TriggerTokens = 0 };

    [GlobalSetup]
    public void Setup()
    {
        var catalog = new PriceCatalog(PriceFiles.LoadBuiltIn());
        _compactor = new Compactor(TokenCounter.Default);
        _compressor = new DocumentCompressor(new DocumentCompressionOptions());
        _stage = new ContextStage(_compressor, _compactor, TokenCounter.Default, catalog, IConversationSummarizer.None, new SummaryStore(), NullLogger<ContextStage>.Instance);
        _conversation = Conversation(30);
        var json = _conversation.ToJsonString();
        _untouched = Call(json, null);
        _belowTrigger = Call(json, new RoutePolicy { Name = "agent", Compaction = new CompactionPolicy { TriggerTokens = 1_000_000 } });
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Bursar.slnx"))) dir = dir.Parent;
        _page = File.ReadAllText(Path.Combine(dir!.FullName, "..", "shared", "data", "documents", "readability", "mozilla-1", "source.html"));
    }

    private static LeverCall Call(string json, RoutePolicy? policy)
    {
        var call = new LeverCall { Id = "c", Started = DateTimeOffset.UnixEpoch, StartTimestamp = 0, Dialect = "openai", Policy = policy, Model = "gpt-4o" };
        call.Request = new CallRequest(() => (JsonObject)JsonNode.Parse(json)!) { Model = "gpt-4o", EstimatedInputTokens = TokenCounter.Default.Count("gpt-4o", json) };
        return call;
    }

    /// <summary>A 30-turn airline-agent conversation: each turn a user message, a tool call, its result (a reservation, about 300 tokens) and an answer.</summary>
    internal static JsonObject Conversation(int turns)
    {
        var messages = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = string.Join(' ', Enumerable.Repeat("Follow the airline policy exactly.", 120)) });
        for (var i = 0; i < turns; i++)
        {
            messages.Add(new JsonObject { ["role"] = "user", ["content"] = $"Please check reservation RES{i:D3}X9 and tell me about the flights." });
            if (i == turns - 1) break;
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = null, ["tool_calls"] = new JsonArray(new JsonObject { ["id"] = $"call_{i}", ["type"] = "function", ["function"] = new JsonObject { ["name"] = "get_reservation_details", ["arguments"] = $"{{\"reservation_id\":\"RES{i:D3}X9\"}}" } }) });
            messages.Add(new JsonObject { ["role"] = "tool", ["tool_call_id"] = $"call_{i}", ["content"] = new JsonObject
            {
                ["reservation_id"] = $"RES{i:D3}X9", ["origin"] = "JFK", ["destination"] = "SEA", ["flights"] = new JsonArray(new JsonObject { ["flight_number"] = $"HAT{100 + i}", ["date"] = "2024-05-20", ["price"] = 180 + i }),
                ["passengers"] = new JsonArray(new JsonObject { ["first_name"] = "Mia", ["last_name"] = "Li", ["dob"] = "1990-04-05" }),
                ["notes"] = string.Join(' ', Enumerable.Repeat("Booked on the website and paid with the card on file.", 16)),
            }.ToJsonString() });
            messages.Add(new JsonObject { ["role"] = "assistant", ["content"] = $"Reservation RES{i:D3}X9 is on flight HAT{100 + i} on May 20." });
        }
        return new JsonObject { ["model"] = "gpt-4o", ["messages"] = messages };
    }

    [Benchmark(Description = "stage, no route opts in")]
    public ValueTask PassThrough() => _stage.InvokeAsync(_untouched, Next, default);

    [Benchmark(Description = "stage, compacting route below its trigger")]
    public ValueTask BelowTrigger() => _stage.InvokeAsync(_belowTrigger, Next, default);

    [Benchmark(Description = "copy of the 30-turn body (baseline of the two below)")]
    public JsonNode CopyOnly() => _conversation.DeepClone();

    [Benchmark(Description = "prune-tool-results, 30 turns (with the copy)")]
    public CompactionOutcome? Prune30() => _compactor.Compact((JsonObject)_conversation.DeepClone(), anthropic: false, _prune, "gpt-4o", CacheRates.Default(false));

    [Benchmark(Description = "sliding-window, 30 turns (with the copy)")]
    public CompactionOutcome? Sliding30() => _compactor.Compact((JsonObject)_conversation.DeepClone(), anthropic: false, _sliding, "gpt-4o", CacheRates.Default(false));

    [Benchmark(Description = "compress a 95 kB readability page (mozilla-1)")]
    public string CompressPage() => _compressor.Compress(_page);
}
