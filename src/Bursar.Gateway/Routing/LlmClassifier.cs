using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Routing;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;

namespace Bursar.Gateway.Routing;

/// <summary>
/// The optional LLM classifier of a ladder route: asks the cheapest tier for a one-word difficulty of the request
/// (<see cref="DifficultyPrompt"/>), at most 5 output tokens, temperature 0. The call is metered on its own ledger row
/// (task <c>routing-classifier</c>, same tags and route) and charged to the caller's budgets. A failure or an answer that is not one of the words is reported, and the caller goes up to the top rung.
/// </summary>
public sealed class LlmClassifier(UpstreamRegistry registry, UpstreamClient upstream, CallMeter meter, Bursar.Core.Budgets.BudgetManager budgets, Bursar.Core.Pricing.PriceCatalog catalog, TimeProvider time) : IDifficultyClassifier
{
    public const string Task = ClassifierCall.Task;

    public async Task<(string? Label, string Detail)> ClassifyAsync(LeverCall routed, string model, string prompt, CallAttribution attribution, string route, CancellationToken ct)
    {
        if (registry.Find(model) is not { } deployment) return (null, $"classifier model {model} is not served");
        var text = ClassifierCall.Shown(prompt);
        var anthropic = deployment.Dialect == Dialect.Anthropic;
        var body = anthropic
            ? new JsonObject
            {
                ["model"] = model, ["max_tokens"] = 5, ["temperature"] = 0, ["system"] = DifficultyPrompt.Instruction,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = text }),
            }
            : new JsonObject
            {
                ["model"] = model, ["max_completion_tokens"] = 5, ["temperature"] = 0,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = DifficultyPrompt.Instruction }, new JsonObject { ["role"] = "user", ["content"] = text }),
            };
        var call = ClassifierCall.Begin(time, deployment.Dialect.Name(), model, deployment.ProviderName, attribution, route);
        string? answer = null;
        try
        {
            using var response = await upstream.SendAsync(deployment, anthropic ? "v1/messages" : "chat/completions", JsonSerializer.SerializeToUtf8Bytes(body), _ => null, ct).ConfigureAwait(false);
            var bytes = await response.Message.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            call.StatusCode = (int)response.Message.StatusCode;
            UsageReader.TryReadResponse(deployment.Dialect, bytes, call.Summary);
            if (!response.Message.IsSuccessStatusCode)
            {
                call.Outcome = "upstream_error";
                return (null, $"classifier {model} answered {call.StatusCode}");
            }
            using var doc = JsonDocument.Parse(bytes);
            answer = anthropic
                ? doc.RootElement.GetProperty("content")[0].GetProperty("text").GetString()
                : doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
        }
        catch (Exception e) when (e is HttpRequestException or TimeoutException or JsonException or KeyNotFoundException or InvalidOperationException or IndexOutOfRangeException)
        {
            call.Outcome = "upstream_error";
            call.ErrorMessage = e.Message;
            return (null, $"classifier {model} failed: {e.Message}");
        }
        finally
        {
            ClassifierCall.Finish(call, meter, budgets, catalog, attribution, model);
        }
        return ClassifierCall.Read(model, answer);
    }
}
