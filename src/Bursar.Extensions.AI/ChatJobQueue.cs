using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Batch;
using Bursar.Core.Pipeline;
using Bursar.Providers.Dialects;
using Bursar.Providers.Translation;
using Bursar.Providers.Upstream;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>
/// The library's side of the batch lever: a call with <see cref="ChatOptions.AllowBackgroundResponses"/> that the deferral
/// stage lets wait is queued in the shared job store (the ledger's SQLite file or the PostgreSQL store) as the request the
/// deployment serving its model takes (<c>Bursar:Providers</c>, the gateway's keys; translated by the gateway's
/// <see cref="RequestTranslator"/> for a Claude deployment). The gateway's flusher sends it in a provider batch with the
/// others (run <c>bursar serve</c> over the same data directory); <see cref="BursarChatClient"/> answers with a
/// <see cref="ResponseContinuationToken"/> naming the job, and polling with it returns the answer once the batch has.
/// </summary>
public sealed class ChatJobQueue(IJobStore jobs, UpstreamRegistry registry, TimeProvider time) : IJobQueue
{
    private const string TokenPrefix = "bursar-job:";

    public async ValueTask<string?> EnqueueAsync(LeverCall call, TimeSpan delay, CancellationToken cancellationToken)
    {
        // only a caller that allowed background responses can take a continuation token instead of an answer (a route's Defer included)
        if (call.Host is not ChatExchange { Updates: null, Options.AllowBackgroundResponses: true } || registry.Find(call.Model) is not { } d) return null;
        var node = (JsonObject)call.Request.Body.DeepClone();
        node["model"] = call.Model;
        node.Remove("stream");
        node.Remove("stream_options");
        if (d.Dialect == Dialect.Anthropic) node = RequestTranslator.OpenAIToAnthropic(node);
        call.Edits.ApplyTo(node, new EditTarget(d.Dialect == Dialect.Anthropic, call.Model, call, cancellationToken));
        var now = time.GetUtcNow();
        var a = call.Attribution;
        var job = new DeferredJob
        {
            Id = "job_" + Guid.CreateVersion7(now).ToString("N"), KeyId = call.Key.Id, Team = a.Team, Customer = a.Customer, Feature = a.Feature, Task = a.Task,
            Template = a.Template, Route = call.Route, Dialect = d.Dialect.Name(), Deployment = d.Name, Model = call.Model, RequestedModel = call.RequestedModel,
            Body = Encoding.UTF8.GetBytes(node.ToJsonString()), CreatedAt = now, Deadline = now + delay, WorstUsd = call.Admitted.WorstCaseUsd / 2, UpdatedAt = now,
        };
        await jobs.EnqueueAsync(job, cancellationToken).ConfigureAwait(false);
        return job.Id;
    }

    public static ResponseContinuationToken Token(string jobId) => ResponseContinuationToken.FromBytes(Encoding.UTF8.GetBytes(TokenPrefix + jobId));

    /// <summary>The job a continuation token names, or null for a token Bursar did not make (the inner client's own).</summary>
    public static string? JobOf(ResponseContinuationToken token)
    {
        var text = Encoding.UTF8.GetString(token.ToBytes().Span);
        return text.StartsWith(TokenPrefix, StringComparison.Ordinal) ? text[TokenPrefix.Length..] : null;
    }

    /// <summary>
    /// Where the job is: still waiting (the same token back), done (its answer as the synchronous call would have returned it),
    /// or failed (thrown, with its reason).
    /// </summary>
    public async Task<ChatResponse> PollAsync(ResponseContinuationToken token, string jobId, CancellationToken ct)
    {
        var job = await jobs.FindJobAsync(jobId, ct).ConfigureAwait(false)
            ?? throw new BursarRefusedException(new LeverRefusal(404, $"No deferred job found with id '{jobId}' (the continuation token names a job this store does not hold).", Blame.Caller) { Param = "ContinuationToken" });
        switch (job.State)
        {
            case JobState.Queued or JobState.Submitted:
                return new ChatResponse { ContinuationToken = token, ResponseId = job.Id, ModelId = job.Model, CreatedAt = job.CreatedAt };
            case JobState.Done when job.Result is { } result && job.StatusCode is >= 200 and < 300:
                var body = JsonNode.Parse(result) as JsonObject ?? throw new InvalidOperationException($"Deferred job {job.Id} holds an answer that is not a JSON object.");
                if (job.Dialect == "anthropic") body = ResponseTranslator.AnthropicToOpenAI(body, job.UpdatedAt.ToUnixTimeSeconds());
                return FromChatCompletion(body, job);
            default:
                var error = job.Result is { } e ? ProviderError.TryParse(job.StatusCode, e) : null;
                throw new BursarRefusedException(new LeverRefusal(job.StatusCode is >= 400 ? job.StatusCode : 504,
                    $"Deferred job {job.Id} {(job.State == JobState.Canceled ? "was canceled" : "failed")}: {error?.Message ?? job.Error ?? "no reason recorded"}", Blame.Upstream) { Code = "deferred_job_failed" });
        }
    }

    /// <summary>An OpenAI chat completion (what the batch line answered) as the <see cref="ChatResponse"/> the inner client would have returned.</summary>
    private static ChatResponse FromChatCompletion(JsonObject c, DeferredJob job)
    {
        var choice = (c["choices"] as JsonArray)?.FirstOrDefault();
        var message = choice?["message"];
        var contents = new List<AIContent>();
        if (message?["content"] is JsonValue cv && cv.TryGetValue<string>(out var text)) contents.Add(new TextContent(text));
        if (message?["tool_calls"] is JsonArray calls)
        {
            foreach (var call in calls)
            {
                var args = call?["function"]?["arguments"] is JsonValue av && av.TryGetValue<string>(out var a) ? a : "{}";
                IDictionary<string, object?>? parsed = JsonNode.Parse(args) is JsonObject o ? o.ToDictionary(p => p.Key, p => (object?)p.Value?.DeepClone()) : null;
                contents.Add(new FunctionCallContent(call?["id"]?.GetValue<string>() ?? "", call?["function"]?["name"]?.GetValue<string>() ?? "", parsed));
            }
        }
        var u = c["usage"];
        long? L(JsonNode? n) => n is JsonValue v && v.TryGetValue<long>(out var x) ? x : null;
        var finish = choice?["finish_reason"] is JsonValue fv && fv.TryGetValue<string>(out var f) ? f : null;
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, contents))
        {
            ResponseId = c["id"]?.GetValue<string>() ?? job.Id, ModelId = c["model"]?.GetValue<string>() ?? job.Model, CreatedAt = job.UpdatedAt,
            FinishReason = finish switch { "length" => ChatFinishReason.Length, "tool_calls" => ChatFinishReason.ToolCalls, "content_filter" => ChatFinishReason.ContentFilter, _ => ChatFinishReason.Stop },
            Usage = new UsageDetails
            {
                InputTokenCount = L(u?["prompt_tokens"]), OutputTokenCount = L(u?["completion_tokens"]), TotalTokenCount = L(u?["total_tokens"]),
                CachedInputTokenCount = L(u?["prompt_tokens_details"]?["cached_tokens"]),
            },
            AdditionalProperties = new AdditionalPropertiesDictionary { ["bursar.job"] = job.Id },
        };
    }
}
