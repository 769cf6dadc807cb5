using System.Reflection;
using Bursar.Core.Admission;
using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Context;
using Bursar.Core.Keys;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Bursar.Core.Usage;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>
/// A face that reuses its calls (the .NET library) relies on <see cref="LeverCall.Restart"/> making the object exactly a
/// new call: a field it forgot would carry one call's route, refusal, cache hit or usage into the next call's ledger row.
/// These tests set every field of a call to something else, restart it, and compare every field with a new call's, so a
/// field added later without a reset fails here.
/// </summary>
public sealed class LeverCallRestartTests
{
    [Fact]
    public void Restart_leaves_no_field_of_the_previous_call()
    {
        var fresh = new LeverCall { Id = "b", Started = DateTimeOffset.UnixEpoch.AddDays(2), StartTimestamp = 7, Dialect = "extensions-ai" };
        var used = new LeverCall { Id = "a", Started = DateTimeOffset.UnixEpoch.AddDays(1), StartTimestamp = 3, Dialect = "openai" };
        Dirty(used);
        Assert.NotEmpty(Differences(used, fresh)); // the dirtying reached the fields compared below

        used.Restart("b", DateTimeOffset.UnixEpoch.AddDays(2), 7, "extensions-ai");

        Assert.Empty(Differences(used, fresh));
        Assert.False(used.Edits.Any);
    }

    [Fact]
    public void Restart_keeps_the_spare_budget_reservation_on_purpose()
    {
        var call = new LeverCall { Id = "a", Started = DateTimeOffset.UnixEpoch, StartTimestamp = 1, Dialect = "extensions-ai" };
        var spare = Bursar.Core.Budgets.BudgetReservation.None;
        call.SpareReservation = spare;
        call.Restart("b", DateTimeOffset.UnixEpoch, 2, "extensions-ai");
        Assert.Same(spare, call.SpareReservation); // admission reuses it only once it is settled (BudgetTests)
    }

    [Fact]
    public void Restart_of_a_request_view_reads_the_new_scalars_and_parses_the_body_again()
    {
        var body = "{\"model\":\"gpt-4o\",\"messages\":[]}";
        var request = new CallRequest(() => (System.Text.Json.Nodes.JsonObject)System.Text.Json.Nodes.JsonNode.Parse(body)!) { Model = "gpt-4o", Stream = true, Choices = 3, CacheControl = "off" };
        Assert.Equal("gpt-4o", (string?)request.Body["model"]);

        body = "{\"model\":\"gpt-4o-mini\",\"messages\":[]}";
        request.Restart("gpt-4o-mini", stream: false, includeUsage: true, deterministic: true, estimatedInputTokens: 12, inputTokenBound: 40, maxTokens: 256, choices: 1, cacheControl: "");

        var expected = new CallRequest(() => null!) { Model = "gpt-4o-mini", IncludeUsage = true, Deterministic = true, EstimatedInputTokens = 12, InputTokenBound = 40, MaxTokens = 256 };
        foreach (var p in typeof(CallRequest).GetProperties().Where(p => p.Name != nameof(CallRequest.Body)))
            Assert.Equal(p.GetValue(expected), p.GetValue(request));
        Assert.Equal("gpt-4o-mini", (string?)request.Body["model"]); // not the first call's DOM
    }

    [Fact]
    public void An_attribution_that_resolves_the_same_is_shared_and_one_that_differs_is_new()
    {
        var key = Levers.Key(allowed: ["feature", "task"]);
        var first = AttributionResolver.Resolve(key, Levers.Headers(("x-bursar-feature", "search")), null, out _);
        var same = AttributionResolver.Resolve(key, Levers.Headers(("x-bursar-feature", "search")), first, out _);
        var other = AttributionResolver.Resolve(key, Levers.Headers(("x-bursar-feature", "search"), ("x-bursar-task", "rank")), first, out _);

        Assert.Same(first, same);
        Assert.NotSame(first, other);
        Assert.Equal(("search", "rank"), (other.Feature, other.Task));
        Assert.Null(first.Task);
    }

    /// <summary>Every field of the call (and of its summary) that a differences check sees, each set away from its default.</summary>
    private static void Dirty(LeverCall c)
    {
        c.Key = Levers.Key("k9");
        c.Tags = _ => "x";
        c.Request = new CallRequest(() => new System.Text.Json.Nodes.JsonObject()) { Model = "m" };
        c.Edits.Add(new NoEdit());
        c.Host = new object();
        c.Attribution = new CallAttribution { KeyId = "k9", Feature = "f" };
        c.Routes = new RoutingOptions();
        c.Policy = new RoutePolicy { Name = "r" };
        c.Model = "gpt-4o";
        c.OutputCap = 100;
        c.MaxTokens = 100;
        c.Refuse(LeverRefusal.Forbidden("no"));
        c.CacheHit = new CachedResponse([1], "application/json", "gpt-4o", 0.01m, 10, 2, DateTimeOffset.UnixEpoch);
        c.SemanticHit = true;
        c.Similarity = 0.9;
        c.CaptureAnswer = true;
        c.Answer = ([1], "application/json");
        c.CacheStatus = "hit";
        c.RequestedModel = "gpt-4o";
        c.Provider = "openai";
        c.Streamed = true;
        c.UpstreamRequestId = "req";
        c.RoutingReason = "why";
        c.Route = "r";
        c.RoutedFrom = "gpt-4o";
        c.Prefix = ("h", 10);
        c.PromptCachePlaced = true;
        c.VolatilePrefix = "v";
        c.Context = new ContextReport();
        c.Admitted = new AdmissionDecision { Model = "gpt-4o", WorstCaseUsd = 1m, RunId = "run", KeyId = "k9" };
        c.Sealed = true;
        c.DeferredJob = "job";
        c.EstimatedInputTokens = 10;
        var s = c.Summary;
        s.Usage = new TokenUsage(1, 2, 3, 4, 5, 6);
        s.UsageSeen = s.UsageFinal = s.Answered = true;
        s.Model = s.ResponseId = s.FinishReason = s.ErrorType = s.ErrorMessage = "x";
        s.FirstTokenTimestamp = 5;
        s.OutputChars = 5;
        s.Deltas = 2;
        s.ToolCalls = 1;
        s.Text = new System.Text.StringBuilder("t");
        s.AppendOutput("out");
        typeof(LeverCall).GetProperty("Pipeline", BindingFlags.Instance | BindingFlags.NonPublic)!.SetValue(c, null);
    }

    /// <summary>The fields of the call and its summary whose values differ (delegates and DOM-parsing requests compared by kind: a reset puts the shared defaults back).</summary>
    private static List<string> Differences(LeverCall a, LeverCall b)
    {
        var diffs = new List<string>();
        Compare(a, b, typeof(LeverCall), "", diffs);
        Compare(a.Summary, b.Summary, typeof(CallSummary), "Summary.", diffs);
        return diffs;
    }

    private static void Compare(object a, object b, Type type, string prefix, List<string> diffs)
    {
        foreach (var f in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
        {
            if (f.FieldType == typeof(CallSummary) || f.FieldType == typeof(RequestEdits)) continue; // compared on their own
            if (f.Name.Contains(nameof(LeverCall.SpareReservation), StringComparison.Ordinal)) continue; // kept across calls by design (tested above)
            var (x, y) = (f.GetValue(a), f.GetValue(b));
            if (!Equals(x, y) && !(x is System.Text.StringBuilder sx && y is System.Text.StringBuilder sy && sx.ToString() == sy.ToString()))
                diffs.Add(prefix + f.Name);
        }
    }

    private sealed class NoEdit : IRequestEdit
    {
        public bool Apply(System.Text.Json.Nodes.JsonObject body, in EditTarget target) => false;
    }
}
