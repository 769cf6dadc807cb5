using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Context;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Providers.Dialects;
using Bursar.Providers.Upstream;

namespace Bursar.Gateway.Context;

/// <summary>
/// The gateway's summary call for summarization checkpoints: the summary model (a deployment of the same provider, its cheapest tier by
/// default) is asked for a summary of the older turns at temperature 0, at most the route's <c>SummaryMaxTokens</c>. The call is metered
/// on its own ledger row (task <c>compaction-summary</c>, the caller's tags and route) and charged to the caller's budgets. A failure
/// gives no summary: the call goes on uncompacted.
/// </summary>
public sealed class LlmSummarizer(UpstreamRegistry registry, UpstreamClient upstream, CallMeter meter, Bursar.Core.Budgets.BudgetManager budgets, Bursar.Core.Pricing.PriceCatalog catalog, TimeProvider time)
    : IConversationSummarizer
{
    public async Task<string?> SummarizeAsync(LeverCall call, string model, string transcript, int maxTokens, CancellationToken cancellationToken)
    {
        if (registry.Find(model) is not { } deployment) return null;
        var anthropic = deployment.Dialect == Dialect.Anthropic;
        var body = anthropic
            ? new JsonObject
            {
                ["model"] = model, ["max_tokens"] = maxTokens, ["temperature"] = 0, ["system"] = SummaryCall.Instruction,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = transcript }),
            }
            : new JsonObject
            {
                ["model"] = model, ["max_completion_tokens"] = maxTokens, ["temperature"] = 0,
                ["messages"] = new JsonArray(new JsonObject { ["role"] = "system", ["content"] = SummaryCall.Instruction }, new JsonObject { ["role"] = "user", ["content"] = transcript }),
            };
        var row = SummaryCall.Begin(time, deployment.Dialect.Name(), model, deployment.ProviderName, call.Attribution, call.Route);
        try
        {
            using var response = await upstream.SendAsync(deployment, anthropic ? "v1/messages" : "chat/completions", JsonSerializer.SerializeToUtf8Bytes(body), _ => null, cancellationToken).ConfigureAwait(false);
            var bytes = await response.Message.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
            row.StatusCode = (int)response.Message.StatusCode;
            UsageReader.TryReadResponse(deployment.Dialect, bytes, row.Summary);
            if (!response.Message.IsSuccessStatusCode)
            {
                row.Outcome = "upstream_error";
                return null;
            }
            using var doc = JsonDocument.Parse(bytes);
            var text = anthropic
                ? doc.RootElement.GetProperty("content")[0].GetProperty("text").GetString()
                : doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
            return string.IsNullOrWhiteSpace(text) ? null : text;
        }
        catch (Exception e) when (e is HttpRequestException or TimeoutException or JsonException or KeyNotFoundException or InvalidOperationException or IndexOutOfRangeException)
        {
            row.Outcome = "upstream_error";
            row.ErrorMessage = e.Message;
            return null;
        }
        finally
        {
            SummaryCall.Finish(row, meter, budgets, catalog, call.Attribution, model);
        }
    }
}
