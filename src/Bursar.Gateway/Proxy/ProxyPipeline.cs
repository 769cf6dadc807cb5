using Bursar.Hosting;
using Bursar.Core.Attribution;
using Bursar.Core.Ledger;
using Bursar.Core.Pipeline;
using Bursar.Gateway.Auth;
using Bursar.Gateway.Hosting;
using Bursar.Providers.Dialects;
using Bursar.Providers.Sse;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Proxy;

/// <summary>
/// The gateway face of the lever pipeline: authenticate the virtual key, read and scan the body, run the call through
/// the levers (<see cref="LeverPipeline"/>; its last step, <see cref="UpstreamCall"/>, calls the provider and relays
/// the answer), answer what a stage ended early (a refusal, a cache hit), and leave exactly one ledger record,
/// whatever happened.
/// </summary>
public sealed partial class ProxyPipeline(KeyAuthenticator auth, LeverPipeline levers, BursarOptions options, ResponseChains chains, RehearsalGate rehearsals, TimeProvider time, ILogger<ProxyPipeline> logger)
{
    /// <summary>The ledger's name for what the caller spoke: the dialect, or OpenAI's Responses and embeddings APIs.</summary>
    public static string LedgerDialect(Dialect dialect, WireApi api) => api switch
    {
        WireApi.Responses => "openai-responses",
        WireApi.Embeddings => "openai-embeddings",
        _ => dialect.Name(),
    };

    public Task HandleAsync(HttpContext ctx, Dialect dialect) => HandleAsync(ctx, dialect, WireApi.Chat);

    public async Task HandleAsync(HttpContext ctx, Dialect dialect, WireApi api)
    {
        var now = time.GetUtcNow();
        var call = new LeverCall
        {
            Id = CallIds.New(now),
            Started = now,
            StartTimestamp = time.GetTimestamp(),
            Dialect = LedgerDialect(dialect, api),
        };
        levers.Track(call); // settled through the pipeline even when refused before it runs
        ctx.Response.Headers["x-bursar-request-id"] = call.Id;
        byte[]? rented = null;
        try
        {
            // the gateway's own warm-up call before it is ready (never once it is): no key to find, nothing to settle
            var (key, authError) = rehearsals.Admits(ctx) ? ((Bursar.Core.Keys.VirtualKey?)RehearsalGate.Key, (ProviderError?)null) : await auth.AuthenticateAsync(ctx.Request, ctx.RequestAborted).ConfigureAwait(false);
            call.Rehearsal = ReferenceEquals(key, RehearsalGate.Key);
            if (!call.Rehearsal) rehearsals.NoteCaller();
            if (authError is not null)
            {
                await CallerAnswer.RefuseAsync(ctx, call, dialect, authError).ConfigureAwait(false);
                return;
            }
            call.Key = key!;
            call.Tags = name => ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null;

            var (buffer, length, bodyError) = await RequestBody.ReadAsync(ctx.Request, options.MaxRequestBodyBytes, logger, ctx.RequestAborted).ConfigureAwait(false);
            rented = buffer;
            var body = new ReadOnlyMemory<byte>(buffer, 0, length);
            var scan = bodyError is not null ? default : api switch
            {
                WireApi.Responses => RequestScan.RunResponses(body.Span),
                WireApi.Embeddings => RequestScan.RunEmbeddings(body.Span),
                _ => RequestScan.Run(body.Span, dialect),
            };
            // a chained Responses call: the stored context is billed again as input, so it is reserved, and the chain is a run
            ResponseChains.Entry? previous = null;
            if (bodyError is null && scan.Error is null && scan.PreviousResponseId is { } prevId)
            {
                previous = chains.Find(prevId);
                if (previous is not null && previous.Scope != ResponseChains.ScopeOf(call.Key))
                {
                    // another tenant's response: not found, as the provider says of one it does not have
                    previous = null;
                    scan.Error = new ProviderError(400, $"Previous response with id '{RequestScan.Shown(prevId)}' not found.") { Param = "previous_response_id", Code = "previous_response_not_found" };
                }
                else if (previous is not null)
                {
                    scan.EstimatedInputTokens += previous.ContextTokens;
                    scan.InputTokenBound += previous.ContextTokens;
                }
                else scan.InputTokenBound = RequestScan.UnknownInputBound; // served elsewhere: reserve the model's context window
                if (scan.Error is null && string.IsNullOrEmpty(ctx.Request.Headers[AttributionResolver.RunHeader]) && AttributionResolver.MaySet(call.Key, "run"))
                {
                    var run = ResponseChains.RunOf(previous?.Root ?? prevId);
                    call.Tags = name => name == AttributionResolver.RunHeader ? run : ctx.Request.Headers.TryGetValue(name, out var v) ? v.ToString() : null;
                }
            }
            call.RequestedModel = scan.Model;
            call.Streamed = scan.Stream;
            call.EstimatedInputTokens = scan.EstimatedInputTokens;
            if ((bodyError ?? scan.Error) is { } error)
            {
                call.Attribution = AttributionResolver.Resolve(call.Key, call.Tags, out _); // the refusal's ledger row names who sent it
                await CallerAnswer.RefuseAsync(ctx, call, dialect, error).ConfigureAwait(false);
                return;
            }
            // the caller's body as a DOM, parsed at most once and only when a stage or a translation needs it
            call.Request = new CallRequest(() => CallerJson.Parse(body.Span))
            {
                Api = api, Model = scan.Model!, Stream = scan.Stream, IncludeUsage = scan.IncludeUsage, Deterministic = scan.Deterministic,
                EstimatedInputTokens = scan.EstimatedInputTokens, InputTokenBound = scan.InputTokenBound, MaxTokens = scan.MaxTokens, Choices = scan.Choices,
                CacheControl = ctx.Request.Headers["x-bursar-cache"].ToString(),
            };
            call.Host = new GatewayExchange(ctx, dialect, body) { IncludeUsage = scan.IncludeUsage, Api = api, Previous = previous, PreviousResponseId = scan.PreviousResponseId, Stored = scan.Store ?? true };

            await levers.RunAsync(call, ctx.RequestAborted).ConfigureAwait(false);

            if (call.DeferredJob is { } job) await Bursar.Gateway.Batch.JobAnswers.AcceptedAsync(ctx, job).ConfigureAwait(false);
            else if (call.Refusal is { } refusal)
            {
                if (call.CacheStatus is { } cache) ctx.Response.Headers["x-bursar-cache"] = cache;
                await CallerAnswer.RefuseAsync(ctx, call, dialect, ProviderError.From(refusal), call.Outcome).ConfigureAwait(false);
            }
            else if (call.CacheHit is { } hit) await CallerAnswer.ServeHitAsync(ctx, call, hit, time).ConfigureAwait(false);
        }
        catch (CallerDisconnectedException)
        {
            // the caller dropped its stream: what passed through so far is metered and settled
            call.Outcome = "canceled";
            call.StatusCode = 499;
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            call.Outcome = "canceled";
            call.StatusCode = 499;
        }
        catch (Exception e) when (e is IOException or OperationCanceledException && ctx.Response.HasStarted)
        {
            // the caller went away mid-stream, or the upstream connection broke
            call.Outcome = ctx.RequestAborted.IsCancellationRequested ? "canceled" : "upstream_error";
            call.ErrorMessage ??= e.Message;
        }
        catch (Exception e)
        {
            LogUnexpected(logger, call.Id, call.RequestedModel, e);
            call.Outcome = "gateway_error";
            call.ErrorMessage = e.Message;
            if (!ctx.Response.HasStarted)
            {
                call.StatusCode = 502;
                await CallerAnswer.WriteErrorAsync(ctx, call, dialect, new ProviderError(502, $"Bursar could not complete this call ({e.GetType().Name}); request id {call.Id}.", ErrorSource.Gateway)).ConfigureAwait(false);
            }
        }
        finally
        {
            if (rented is not null) RequestBody.Return(rented);
            await call.SealAsync().ConfigureAwait(false); // a call that ended without its last byte (caller gone, upstream broke)
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Call {CallId} for model {Model} failed inside the gateway")]
    private static partial void LogUnexpected(ILogger logger, string callId, string? model, Exception exception);
}
