using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Bursar.Gateway.Routing;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;
using Bursar.Providers.Translation;
using Bursar.Providers.Upstream;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Proxy;

/// <summary>
/// The gateway's provider call, the pipeline's last step: what goes upstream (the caller's bytes untouched unless a
/// translation, an edit or metering changes them), the upstream call with the client's retries, then the route's
/// fallbacks, and the answer relayed to the caller while it is metered (SSE pumped frame by frame, never buffered).
/// </summary>
public sealed partial class UpstreamCall(UpstreamRegistry registry, UpstreamClient upstream, PriceCatalog catalog, DeploymentHealth health, ResponseChains chains, TimeProvider time, ILogger<UpstreamCall> logger) : IProviderCall
{
    private static readonly string[] ForwardedResponseHeaders = ["request-id", "x-request-id", "retry-after", "retry-after-ms"];

    public async ValueTask CallAsync(LeverCall call, CancellationToken cancellationToken)
    {
        var x = (GatewayExchange)call.Host!;
        var ctx = x.Http;
        if (call.CacheStatus is { } status) ctx.Response.Headers["x-bursar-cache"] = status;
        // the route stage refused models no deployment serves; a warm-up call goes to the warm-up Simulator in its own dialect
        var first = call.Rehearsal ? registry.Rehearsal(x.Dialect) ?? throw new InvalidOperationException("the warm-up has ended: its upstream is closed") : registry.Find(call.Model)!;
        call.Provider = first.ProviderName;
        // the chain: the chosen model, then the route's fallbacks (deployments in cooldown last; models whose context window is too small skipped, and said so)
        var (models, skipped) = FallbackChain.For(call, catalog, m => registry.Find(m) is not null);
        // a deployment in cooldown is tried only after every healthy one
        var chain = models.Select(m => (Deployment: m == call.Model ? first : registry.Find(m)!, Model: m)).OrderBy(c => health.IsCooling(c.Deployment.Name) ? 1 : 0).ToList();
        if (x.Api != WireApi.Chat && Unservable(call, x, chain) is { } why)
        {
            await CallerAnswer.RefuseAsync(ctx, call, x.Dialect, why).ConfigureAwait(false);
            return;
        }
        var failures = new List<string>();
        UpstreamResponse response;
        UpstreamDeployment deployment;
        string model;
        var injectedUsage = false;
        for (var attempt = 0; ; attempt++)
        {
            (deployment, model) = chain[attempt];
            call.Provider = deployment.ProviderName;
            ReadOnlyMemory<byte> body;
            try
            {
                (body, injectedUsage) = Build(call, x, deployment, model, attempt, cancellationToken);
            }
            catch (RequestTranslator.TranslationException e)
            {
                await CallerAnswer.RefuseAsync(ctx, call, x.Dialect, e.Error).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (CallRequest.IsBadJson(e))
            {
                await CallerAnswer.RefuseAsync(ctx, call, x.Dialect, ProviderError.BadRequest($"The request body cannot be read for {deployment.Dialect.Name()}: {e.Message}")).ConfigureAwait(false);
                return;
            }
            var path = deployment.Dialect == Dialect.Anthropic ? "v1/messages" : x.Api switch { WireApi.Responses => "responses", WireApi.Embeddings => "embeddings", _ => "chat/completions" };
            var last = attempt + 1 >= chain.Count;
            try
            {
                response = await upstream.SendAsync(deployment, path, body, name => ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TimeoutException && !cancellationToken.IsCancellationRequested)
            {
                if (!call.Rehearsal) health.Failed(deployment.Name, call.Routes!.Cooldown);
                failures.Add($"{model}: {(e is TimeoutException ? "timed out" : "unreachable")}");
                if (!last) continue;
                var note = failures.Count > 1 ? $" (tried {string.Join("; ", failures)})" : "";
                await CallerAnswer.RefuseAsync(ctx, call, x.Dialect, e is TimeoutException
                    ? new ProviderError(504, $"Upstream deployment '{deployment.Name}' ({deployment.BaseUri}) did not answer within its timeout{note}.", ErrorSource.Upstream)
                    : new ProviderError(502, $"Upstream deployment '{deployment.Name}' ({deployment.BaseUri}) could not be reached: {e.Message}{note}", ErrorSource.Upstream), "upstream_error").ConfigureAwait(false);
                return;
            }
            var code = (int)response.Message.StatusCode;
            if (!last && UpstreamClient.IsRetryable(code))
            {
                // the chosen model is failing after the client's retries: cool its deployment down and try the next model in the chain
                health.Failed(deployment.Name, call.Routes!.Cooldown);
                failures.Add($"{model}: {code}");
                response.Dispose();
                continue;
            }
            break;
        }
        if (failures.Count > 0 || skipped.Count > 0 || model != call.Model) LogFallback(logger, call.Attribution.Feature, FallbackChain.Explain(call, model, failures, skipped));
        using (response)
        {
            await RelayAsync(ctx, call, x, deployment, response.Message, injectedUsage, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>What goes upstream for this attempt: the caller's bytes, or the DOM translated, edited and re-serialized.</summary>
    internal static (ReadOnlyMemory<byte> Body, bool InjectedUsage) Build(LeverCall call, GatewayExchange x, UpstreamDeployment deployment, string model, int attempt, CancellationToken ct)
    {
        var req = call.Request;
        var dialect = x.Dialect;
        var injectUsage = x.Api == WireApi.Chat && dialect == Dialect.OpenAI && deployment.Dialect == Dialect.OpenAI && req.Stream && !x.IncludeUsage;
        if (deployment.Dialect == dialect && model == req.Model && !call.Edits.Any && !injectUsage) return (x.Body, false);
        // a second attempt starts again from the caller's bytes: the previous one changed the DOM
        var node = attempt == 0 ? req.Body : req.Reparse();
        var modified = false;
        if (deployment.Dialect != dialect)
        {
            if (x.Api == WireApi.Responses)
            {
                node = ResponsesTranslator.ToMessages(node, x.Previous?.Conversation, out var input);
                x.TranslatedInput = input;
            }
            else node = RequestTranslator.Translate(dialect, deployment.Dialect, node);
            node["model"] = model;
            modified = true;
        }
        else if (model != req.Model)
        {
            node["model"] = model;
            modified = true;
        }
        modified |= call.Edits.ApplyTo(node, new EditTarget(deployment.Dialect == Dialect.Anthropic, model, call, ct));
        if (injectUsage)
        {
            // no streamed call goes unmetered: ask for usage, strip the extra chunk on the way back
            var so = node["stream_options"] as JsonObject ?? new JsonObject();
            so["include_usage"] = true;
            node["stream_options"] = so;
            modified = true;
        }
        return (modified ? CallerJson.Serialize(node, x.Body.Length) : x.Body, injectUsage);
    }

    /// <summary>Sends the upstream answer to the caller; keeps a copy of what the caller got in <see cref="LeverCall.Answer"/> when a cache asked for it and the call succeeded.</summary>
    private async Task RelayAsync(HttpContext ctx, LeverCall call, GatewayExchange x, UpstreamDeployment deployment, HttpResponseMessage response, bool injectedUsage, CancellationToken ct)
    {
        var dialect = x.Dialect;
        var status = (int)response.StatusCode;
        call.StatusCode = status;
        foreach (var name in ForwardedResponseHeaders)
        {
            if (response.Headers.TryGetValues(name, out var values)) ctx.Response.Headers[name] = values.ToArray();
        }
        call.UpstreamRequestId = response.Headers.TryGetValues(deployment.Dialect == Dialect.Anthropic ? "request-id" : "x-request-id", out var rid) ? rid.FirstOrDefault() : null;
        var isSse = response.Content.Headers.ContentType?.MediaType == "text/event-stream";
        if (status != 200 || !isSse)
        {
            var bytes = await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
            if (bytes.Length > RequestBody.MaxPooledBodyBytes) LargeBodyMemoryTrim.LargeBodySeen(); // a large answer leaves pooled buffers behind too
            if (status != 200)
            {
                var err = ProviderError.TryParse(status, bytes);
                call.Outcome = "upstream_error";
                call.ErrorType = err?.TypeOverride ?? "http_" + status;
                call.ErrorMessage = err?.Message;
                if (deployment.Dialect != dialect || err is null)
                {
                    // the caller's dialect, the caller's vocabulary: an Anthropic overloaded_error reaches an OpenAI caller as a 503 server_error
                    var shown = (err ?? new ProviderError(status, $"Upstream '{deployment.Name}' answered HTTP {status}.", ErrorSource.Upstream)).ForDialect(dialect);
                    status = shown.Status;
                    call.StatusCode = status;
                    bytes = shown.ToJson(dialect);
                }
                await CallerAnswer.WriteJsonAsync(ctx, call, status, bytes).ConfigureAwait(false);
                return;
            }
            call.Summary.Answered = true;
            var readable = (x.Api, deployment.Dialect) switch
            {
                (WireApi.Responses, Dialect.OpenAI) => UsageReader.TryReadResponsesBody(bytes, call.Summary),
                (WireApi.Embeddings, _) => UsageReader.TryReadEmbeddingsBody(bytes, call.Summary),
                _ => UsageReader.TryReadResponse(deployment.Dialect, bytes, call.Summary),
            };
            if (!readable)
            {
                call.Outcome = "upstream_error";
                call.ErrorType = "usage_unreadable";
                call.ErrorMessage = $"Upstream '{deployment.Name}' ({deployment.BaseUri}) answered 200 with a body that is not {(x.Api == WireApi.Chat ? "a " + deployment.Dialect.Name() : ProxyPipeline.LedgerDialect(dialect, x.Api))} response; check its Dialect and BaseUrl.";
                call.StatusCode = 502;
                await CallerAnswer.WriteErrorAsync(ctx, call, dialect, new ProviderError(502, call.ErrorMessage, ErrorSource.Upstream)).ConfigureAwait(false);
                return;
            }
            if (deployment.Dialect != dialect && x.Api == WireApi.Responses)
            {
                // Bursar answers as the Responses API and keeps the conversation: the id is Bursar's
                bytes = ResponsesTranslator.FromMessage(bytes, call.Request.Body, "resp_" + call.Id, time.GetUtcNow().ToUnixTimeSeconds(), call.Summary.Usage, out var items);
                (x.TranslatedOutput, x.TranslatedResponse, call.Summary.ResponseId) = (items, bytes, "resp_" + call.Id);
            }
            else if (deployment.Dialect != dialect)
                bytes = ResponseTranslator.Translate(deployment.Dialect, dialect, bytes, time.GetUtcNow().ToUnixTimeSeconds());
            Remember(call, x, deployment);
            await CallerAnswer.WriteJsonAsync(ctx, call, 200, bytes).ConfigureAwait(false);
            if (call.CaptureAnswer) call.Answer = (bytes, "application/json");
            return;
        }

        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        call.Summary.Answered = true;
        SseStreamHandler handler = (deployment.Dialect, dialect) switch
        {
            (Dialect.OpenAI, Dialect.OpenAI) when x.Api == WireApi.Responses => new ResponsesMeteringHandler(call.Summary, time),
            (Dialect.Anthropic, Dialect.OpenAI) when x.Api == WireApi.Responses => new AnthropicToResponsesStream(call.Summary, time, call.Request.Body, "resp_" + call.Id, time.GetUtcNow().ToUnixTimeSeconds()),
            (Dialect.Anthropic, Dialect.Anthropic) => new AnthropicMeteringHandler(call.Summary, time),
            (Dialect.OpenAI, Dialect.OpenAI) => new OpenAIMeteringHandler(call.Summary, time, injectedUsage),
            (Dialect.Anthropic, Dialect.OpenAI) => new AnthropicToOpenAIStream(call.Summary, time, includeUsage: x.IncludeUsage, time.GetUtcNow().ToUnixTimeSeconds()),
            _ => new OpenAIToAnthropicStream(call.Summary, time, call.EstimatedInputTokens),
        };
        await using var upstreamStream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        var copy = call.CaptureAnswer ? new ArrayBufferWriter<byte>(4096) : null;
        await SsePump.PumpAsync(upstreamStream, ctx.Response.BodyWriter, handler, ct, copy, () =>
        {
            if (handler is AnthropicToResponsesStream translated && translated.Response is not null)
                (x.TranslatedOutput, x.TranslatedResponse, call.Summary.ResponseId) = (translated.Output, translated.Response, "resp_" + call.Id);
            Remember(call, x, deployment);
            return call.SealAsync();
        }).ConfigureAwait(false);
        if (call.Summary.ErrorType is not null)
        {
            call.Outcome = "upstream_error";
            call.ErrorType = call.Summary.ErrorType;
            return;
        }
        if (copy is not null && call.Summary.FinishReason is not null) call.Answer = (copy.WrittenSpan.ToArray(), "text/event-stream");
    }

    /// <summary>
    /// What a Responses or embeddings call cannot be sent to: embeddings to a Messages deployment (Anthropic has none); a
    /// chained call to another deployment than the one that holds its previous response (the chain is kept to it).
    /// </summary>
    private static ProviderError? Unservable(LeverCall call, GatewayExchange x, List<(UpstreamDeployment Deployment, string Model)> chain)
    {
        if (x.Api == WireApi.Embeddings)
        {
            chain.RemoveAll(c => c.Deployment.Dialect != Dialect.OpenAI);
            return chain.Count > 0 ? null : ProviderError.BadRequest($"'{call.Model}' is served by an Anthropic Messages deployment, which has no embeddings endpoint; use an OpenAI-compatible embedding model.", "model");
        }
        if (x.Previous is { } prev)
        {
            chain.RemoveAll(c => c.Deployment.Name != prev.Deployment);
            if (chain.Count == 0)
                return ProviderError.BadRequest($"The previous response '{RequestScan.Shown(prev.Id)}' is stored on deployment '{prev.Deployment}', which does not serve '{call.Model}'; continue the chain with a model that deployment serves, or send the conversation as input without previous_response_id.", "previous_response_id");
        }
        // a Claude model continues only a conversation Bursar kept; one stored by OpenAI stays with OpenAI
        if (x.PreviousResponseId is not null && x.Previous?.Conversation is null)
        {
            chain.RemoveAll(c => c.Deployment.Dialect == Dialect.Anthropic);
            if (chain.Count == 0)
                return ProviderError.BadRequest($"'{call.Model}' is a Claude model, and the previous response '{RequestScan.Shown(x.PreviousResponseId)}' is stored by OpenAI (or was not served by this gateway); continue it with an OpenAI model, or send the conversation as input.", "previous_response_id");
        }
        return null;
    }

    /// <summary>A stored Responses answer: remember where it lives, whose it is, its chain and the context a continuation re-bills.</summary>
    private void Remember(LeverCall call, GatewayExchange x, UpstreamDeployment deployment)
    {
        if (x.Api != WireApi.Responses || !x.Stored || call.Summary.ResponseId is not { } id || !call.Summary.UsageSeen) return;
        var u = call.Summary.Usage;
        JsonArray? conversation = null, input = null;
        if (deployment.Dialect == Dialect.Anthropic)
        {
            if (x.TranslatedResponse is null) return;
            // Bursar keeps the state a continuation needs: every earlier item, this input (with ids, for input_items), this output
            input = new JsonArray();
            var n = 0;
            foreach (var item in x.TranslatedInput ?? [])
            {
                var copy = (JsonObject)item!.DeepClone();
                copy["id"] ??= $"item_{id[5..]}_{n++}";
                input.Add(copy);
            }
            conversation = x.Previous?.Conversation is { } before ? (JsonArray)before.DeepClone() : [];
            foreach (var item in input) conversation.Add(item!.DeepClone());
            foreach (var item in x.TranslatedOutput ?? []) conversation.Add(item!.DeepClone());
        }
        chains.Add(new ResponseChains.Entry(id, x.Previous?.Root ?? x.PreviousResponseId ?? id,
            deployment.Name, ResponseChains.ScopeOf(call.Key), u.TotalInputTokens + u.OutputTokens, call.Summary.Model ?? call.Model,
            conversation, deployment.Dialect == Dialect.Anthropic ? x.TranslatedResponse : null, input));
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Routing fallback on feature {Feature}: {Detail}")]
    private static partial void LogFallback(ILogger logger, string? feature, string detail);
}
