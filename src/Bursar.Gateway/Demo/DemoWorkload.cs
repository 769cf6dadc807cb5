using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Microsoft.Extensions.DependencyInjection;

namespace Bursar.Gateway.Demo;

/// <summary>
/// The demo workload: tagged features across both wire formats, streamed and not, tools, a long cacheable policy prefix,
/// repeated deterministic tickets (exact cache hits), an unpriced experimental model and a customer over its budget.
/// Driven by <c>bursar demo</c> and by the dashboard's browser test.
/// </summary>
public static class DemoWorkload
{
    public sealed record Workload(string Feature, string Team, string Task, string Model, bool Anthropic, bool Stream, bool Tools, bool CachedPrefix, int Weight);

    public static readonly Workload[] Mix =
    [
        new("support-chat", "support", "chat", "claude-sonnet-4-5", Anthropic: true, Stream: true, Tools: false, CachedPrefix: true, Weight: 30),
        new("ticket-classify", "ops", "classification", "gpt-4o-mini", Anthropic: false, Stream: false, Tools: false, CachedPrefix: false, Weight: 25),
        new("doc-summarize", "content", "summarization", "claude-haiku-4-5", Anthropic: true, Stream: false, Tools: false, CachedPrefix: false, Weight: 15),
        new("code-review", "eng", "code", "gpt-4.1", Anthropic: false, Stream: true, Tools: false, CachedPrefix: true, Weight: 15),
        new("agent", "eng", "agent", "gpt-4o", Anthropic: false, Stream: false, Tools: true, CachedPrefix: false, Weight: 13),
        new("experiments", "research", "eval", "gpt-9-preview", Anthropic: false, Stream: false, Tools: false, CachedPrefix: false, Weight: 2),
    ];

    private static readonly string Policy = string.Join(" ", Enumerable.Range(1, 260).Select(i => $"Policy {i}: answer politely, cite the order number, never promise refunds above the limit."));

    /// <summary>How far the demo is: calls done of the total, of which refused by Bursar's policies (a budget) and failed otherwise.</summary>
    public readonly record struct Progress(int Done, int Total, int Refused, int Failed);

    /// <summary>Sets the demo budget and keys, then drives <paramref name="total"/> calls at <paramref name="concurrency"/>; reports its progress as it goes.</summary>
    public static async Task DriveAsync(IServiceProvider services, string url, int total, int concurrency, Action<Progress>? progress, CancellationToken ct)
    {
        var store = services.GetRequiredService<Bursar.Core.Storage.IBursarStore>();
        // the experimental model has no price on purpose; the Simulator standing in for the OpenAI deployment offers it
        services.GetService<Bursar.Providers.Simulator.ProviderSimulator>()?.AddModels(Mix.Where(w => w.Feature == "experiments").Select(w => w.Model));
        // a small monthly budget on one customer, so the demo shows a refusal as well
        await store.UpsertBudgetAsync(new BudgetDefinition
        {
            Id = "demo-customer-e", Scope = BudgetScope.Customer, Value = "customer-e", Period = BudgetPeriod.Month, LimitUsd = 0.02m,
        }, ct).ConfigureAwait(false);
        await services.GetRequiredService<BudgetManager>().ReloadAsync(ct).ConfigureAwait(false);
        var keys = new Dictionary<string, string>();
        foreach (var team in Mix.Select(m => m.Team).Distinct())
        {
            var (key, secret) = KeyFactory.Create(TimeProvider.System, name: "demo " + team, team: team, allowedCustomers: [.. Enumerable.Range(0, 5).Select(c => "customer-" + (char)('a' + c))]);
            await store.AddAsync(key, ct).ConfigureAwait(false);
            keys[team] = secret;
        }
        using var http = new HttpClient { BaseAddress = new Uri(url) };
        var done = 0;
        var refused = 0;
        var failed = 0;
        await Parallel.ForEachAsync(Enumerable.Range(0, total), new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, concurrency), CancellationToken = ct }, async (i, token) =>
        {
            var w = Pick(i);
            using var req = Build(w, i, keys[w.Team]);
            using var resp = await http.SendAsync(req, HttpCompletionOption.ResponseHeadersRead, token).ConfigureAwait(false);
            var text = await resp.Content.ReadAsStringAsync(token).ConfigureAwait(false);
            // a refusal by Bursar's own policy (customer-e's budget) is what the demo shows, not a failure
            if (!resp.IsSuccessStatusCode) Interlocked.Increment(ref IsPolicyRefusal(text) ? ref refused : ref failed);
            progress?.Invoke(new Progress(Interlocked.Increment(ref done), total, Volatile.Read(ref refused), Volatile.Read(ref failed)));
        }).ConfigureAwait(false);
    }

    private static bool IsPolicyRefusal(string body) =>
        body.Contains("\"budget_exceeded\"", StringComparison.Ordinal) || body.Contains("\"run_limit_exceeded\"", StringComparison.Ordinal);

    public static Workload Pick(int i)
    {
        var slot = (int)((uint)(i * 2654435761) % 100);
        foreach (var w in Mix)
        {
            if (slot < w.Weight) return w;
            slot -= w.Weight;
        }
        return Mix[0];
    }

    public static HttpRequestMessage Build(Workload w, int i, string key)
    {
        var question = w.Task == "classification"
            ? $"Classify ticket #{i % 10}: my order has not arrived and the tracking page shows no update." // tickets repeat
            : $"Request {i % 40}: please help with item {i % 17} for the {w.Feature} flow.";
        JsonObject body;
        string path;
        if (w.Anthropic)
        {
            path = "/v1/messages";
            var system = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = w.CachedPrefix ? Policy : "You summarize documents." });
            // no cache_control from the caller: Bursar places the breakpoint on the long, stable policy prefix
            body = new JsonObject
            {
                ["model"] = w.Model,
                ["max_tokens"] = 400,
                ["system"] = system,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = question }),
                ["stream"] = w.Stream,
            };
        }
        else
        {
            path = "/v1/chat/completions";
            var messages = new JsonArray(
                new JsonObject { ["role"] = "system", ["content"] = w.CachedPrefix ? Policy : "Be brief." },
                new JsonObject { ["role"] = "user", ["content"] = question });
            body = new JsonObject { ["model"] = w.Model, ["messages"] = messages, ["max_completion_tokens"] = 300, ["stream"] = w.Stream };
            if (w.Task == "classification") body["temperature"] = 0; // deterministic: repeated tickets come from the exact cache
            if (w.Tools)
            {
                body["tools"] = new JsonArray(new JsonObject
                {
                    ["type"] = "function",
                    ["function"] = new JsonObject
                    {
                        ["name"] = "lookup_order",
                        ["parameters"] = new JsonObject { ["type"] = "object", ["properties"] = new JsonObject { ["order_id"] = new JsonObject { ["type"] = "string" } }, ["required"] = new JsonArray("order_id") },
                    },
                });
            }
        }
        var req = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
        req.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        req.Headers.Add("x-bursar-feature", w.Feature);
        req.Headers.Add("x-bursar-task", w.Task);
        req.Headers.Add("x-bursar-customer", "customer-" + (char)('a' + i % 5));
        req.Headers.Add("x-bursar-template", $"{w.Feature}-v{1 + i % 2}"); // two prompt-template versions per feature, compared side by side
        if (w.Tools) req.Headers.Add("x-bursar-run", "run-" + i / 3);
        return req;
    }
}
