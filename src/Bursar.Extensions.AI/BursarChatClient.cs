using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Bursar.Core.Attribution;
using Bursar.Core.Ledger;
using Bursar.Core.Batch;
using Bursar.Core.Pipeline;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>
/// Bursar's lever pipeline around an <see cref="IChatClient"/>: every model call goes through attribution, the run
/// guard, the exact and semantic response caches, routing, output caps, admission (rate limits, run caps, budgets)
/// and is metered into the Bursar ledger with the same record the gateway writes. A refusal throws
/// <see cref="BursarRefusedException"/> (or its budget, rate-limit and run-limit kinds) before anything is spent; a
/// cache hit never reaches the inner client.
/// </summary>
/// <remarks>
/// Put it inside <see cref="FunctionInvokingChatClient"/> (each model call of a tool loop is one ledger row and one
/// turn of the run) and outside, or instead of, <see cref="DistributedCachingChatClient"/> (which replays hits with
/// their original usage, so an inner one would be billed as new calls). Building it the other way round throws.
/// </remarks>
public sealed class BursarChatClient : DelegatingChatClient
{
    /// <summary>Keys of <c>ChatOptions.AdditionalProperties</c> Bursar reads (<c>bursar.feature</c>, <c>bursar.customer</c>, <c>bursar.team</c>, <c>bursar.task</c>, <c>bursar.template</c>, <c>bursar.run</c>, <c>bursar.cache</c> = on/off); they are never sent to the provider.</summary>
    public const string PropertyPrefix = "bursar.";

    private readonly BursarRuntime _runtime;
    private readonly BursarChatClientOptions _options;
    private readonly string _provider;
    private readonly string? _defaultModel;

    public BursarChatClient(IChatClient innerClient, BursarRuntime runtime, BursarChatClientOptions? options = null) : base(innerClient)
    {
        if (innerClient.GetService(typeof(FunctionInvokingChatClient)) is not null)
            throw new InvalidOperationException("UseBursar() is outside UseFunctionInvocation(): a whole tool loop would be metered as one call and run caps could not count its turns. Call UseFunctionInvocation() before UseBursar() on the ChatClientBuilder, so Bursar wraps each model call.");
        if (innerClient.GetService(typeof(DistributedCachingChatClient)) is not null)
            throw new InvalidOperationException("UseDistributedCache() is inside UseBursar(): it replays cached answers with their original usage, so Bursar would bill every hit as a new call. Call UseDistributedCache() before UseBursar(), or use Bursar's response cache (Bursar:ResponseCache) instead.");
        _runtime = runtime;
        _options = options?.Clone() ?? new BursarChatClientOptions();
        var metadata = innerClient.GetService(typeof(ChatClientMetadata)) as ChatClientMetadata;
        _provider = _options.ProviderName ?? metadata?.ProviderName ?? "chat-client";
        _defaultModel = metadata?.DefaultModelId;
    }

    public override Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var started = _runtime.EnsureStartedAsync(cancellationToken);
        if (!started.IsCompletedSuccessfully) return StartThenRespondAsync(started, messages, options, cancellationToken);
        if (options?.ContinuationToken is { } token && ChatJobQueue.JobOf(token) is { } jobId)
            return _runtime.Jobs.PollAsync(token, jobId, cancellationToken); // a deferred call: where its job is
        CallSlot slot;
        try
        {
            slot = Begin(messages, options, updates: null);
        }
        catch (Exception e)
        {
            return Task.FromException<ChatResponse>(e); // as an async method would: the caller sees it when it awaits
        }
        ValueTask run;
        try
        {
            run = _runtime.Pipeline.RunAsync(slot.Call, cancellationToken);
        }
        catch (Exception e)
        {
            run = ValueTask.FromException(e);
        }
        if (!run.IsCompletedSuccessfully) return RespondAsync(slot, run, cancellationToken);
        run.GetAwaiter().GetResult();
        var seal = slot.Call.SealAsync();
        if (!seal.IsCompletedSuccessfully) return SealThenAnswerAsync(slot, seal);
        seal.GetAwaiter().GetResult();
        // the usual case: every stage and the inner client finished at once, and nothing waits for anything
        return Answer(slot);
    }

    private async Task<ChatResponse> StartThenRespondAsync(Task started, IEnumerable<ChatMessage> messages, ChatOptions? options, CancellationToken cancellationToken)
    {
        await started.ConfigureAwait(false);
        return await GetResponseAsync(messages, options, cancellationToken).ConfigureAwait(false);
    }

    private async Task<ChatResponse> RespondAsync(CallSlot slot, ValueTask run, CancellationToken cancellationToken)
    {
        try
        {
            await run.ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Failed(slot.Call, e, cancellationToken);
            throw; // the slot is not reused: whoever sees this exception may still look at what it held
        }
        finally
        {
            await slot.Call.SealAsync().ConfigureAwait(false);
        }
        return await Answer(slot).ConfigureAwait(false);
    }

    private static async Task<ChatResponse> SealThenAnswerAsync(CallSlot slot, ValueTask seal)
    {
        await seal.ConfigureAwait(false);
        return await Answer(slot).ConfigureAwait(false);
    }

    /// <summary>What the caller gets once the call is sealed: the refusal thrown, the cached answer, or the inner client's answer (its own task when it has one).</summary>
    private static Task<ChatResponse> Answer(CallSlot slot)
    {
        var call = slot.Call;
        Task<ChatResponse> answer;
        if (call.Refusal is { } refusal) answer = Task.FromException<ChatResponse>(BursarRefusedException.For(refusal));
        else if (call.CacheHit is { } hit) answer = Task.FromResult(ChatJson.Deserialize(hit.Body));
        else if (call.DeferredJob is { } job)
        {
            // deferred to a provider batch: no answer yet, a token to poll with (ChatOptions.ContinuationToken)
            answer = Task.FromResult(new ChatResponse
            {
                ContinuationToken = ChatJobQueue.Token(job), ResponseId = job, ModelId = call.Model, CreatedAt = call.Started,
                AdditionalProperties = new AdditionalPropertiesDictionary { ["bursar.job"] = job },
            });
        }
        else answer = slot.Exchange.ResponseTask ?? Task.FromResult(slot.Exchange.Response!);
        slot.Return();
        return answer;
    }

    public override async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await _runtime.EnsureStartedAsync(cancellationToken).ConfigureAwait(false);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var channel = Channel.CreateBounded<ChatResponseUpdate>(new BoundedChannelOptions(16) { SingleReader = true, SingleWriter = true });
        var call = Begin(messages, options, channel.Writer).Call; // a streamed call's slot is not reused: its updates may outlive it
        var run = RunStreamingAsync(call, channel.Writer, stop.Token);
        var finished = false;
        Exception? failure;
        try
        {
            await foreach (var update in channel.Reader.ReadAllAsync(CancellationToken.None).ConfigureAwait(false)) yield return update;
            finished = true;
        }
        finally
        {
            if (!finished) await stop.CancelAsync().ConfigureAwait(false); // the caller stopped reading: stop the provider's stream
            failure = await run.ConfigureAwait(false);
        }
        if (failure is not null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        if (call.Refusal is { } refusal) throw BursarRefusedException.For(refusal);
        if (call.CacheHit is { } hit)
            foreach (var update in ChatJson.Deserialize(hit.Body).ToChatResponseUpdates()) yield return update;
    }

    /// <summary>Runs a streamed call; returns what the caller should see thrown (null when it ended well, or when the caller itself stopped reading).</summary>
    private async Task<Exception?> RunStreamingAsync(LeverCall call, ChannelWriter<ChatResponseUpdate> writer, CancellationToken ct)
    {
        try
        {
            await _runtime.Pipeline.RunAsync(call, ct).ConfigureAwait(false);
            return null;
        }
        catch (Exception e)
        {
            Failed(call, e, ct);
            return e is OperationCanceledException && ct.IsCancellationRequested ? null : e;
        }
        finally
        {
            await call.SealAsync().ConfigureAwait(false);
            writer.TryComplete();
        }
    }

    private static void Failed(LeverCall call, Exception e, CancellationToken ct)
    {
        if (e is OperationCanceledException && ct.IsCancellationRequested)
        {
            call.Outcome = "canceled";
            call.StatusCode = 499;
            return;
        }
        call.Outcome = "upstream_error";
        call.ErrorType = e.GetType().Name;
        call.ErrorMessage = e.Message;
        call.StatusCode = e is HttpRequestException { StatusCode: { } status } ? (int)status : 502;
    }

    private CallSlot Begin(IEnumerable<ChatMessage> messages, ChatOptions? options, ChannelWriter<ChatResponseUpdate>? updates)
    {
        var time = _runtime.Time;
        var now = time.GetUtcNow();
        var model = options?.ModelId ?? _defaultModel
            ?? throw new InvalidOperationException("No model: set ChatOptions.ModelId or the inner client's default model. Bursar prices, routes and budgets each call by its model.");
        var list = messages as IList<ChatMessage> ?? messages.ToList();
        var streaming = updates is not null;
        var slot = CallSlot.Rent();
        var scan = ChatRequestJson.Write(list, options, model, streaming, slot.Body);
        var call = slot.Call;
        call.Restart(CallIds.New(now), now, time.GetTimestamp(), DialectName);
        call.Key = _options.Key ?? BursarChatClientOptions.InProcessKey;
        call.RequestedModel = model;
        call.Streamed = streaming;
        call.EstimatedInputTokens = scan.EstimatedInputTokens;
        var props = options?.AdditionalProperties;
        (slot.Client, slot.Properties, slot.Background) = (this, props, !streaming && options?.AllowBackgroundResponses == true);
        call.Tags = slot.Tags;
        slot.Request.Restart(model, streaming, includeUsage: true, scan.Deterministic, scan.EstimatedInputTokens, scan.InputTokenBound, scan.MaxTokens, scan.Choices,
            props is not null && props.TryGetValue(PropertyPrefix + "cache", out var c) ? c?.ToString() ?? "" : "");
        call.Request = slot.Request;
        var x = slot.Exchange;
        (x.Inner, x.ClientOptions, x.Messages, x.Options, x.Provider, x.Updates) = (InnerClient, _options, list, options, _provider, updates);
        call.Host = x;
        _runtime.Pipeline.Track(call);
        return slot;
    }

    /// <summary>The dialect the ledger names for calls through the library.</summary>
    internal const string DialectName = "extensions-ai";

    /// <summary>
    /// The delay a background call may wait (the deferral stage's <c>x-bursar-defer</c>): this call's <c>bursar.defer</c> property
    /// (<c>1h</c>, <c>24h</c>), else <see cref="BursarChatClientOptions.BackgroundDelay"/>.
    /// </summary>
    private string DeferTag(AdditionalPropertiesDictionary? props) =>
        props is not null && props.TryGetValue(PropertyPrefix + "defer", out var v) && v?.ToString() is { Length: > 0 } d
            ? d : ((long)_options.BackgroundDelay.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture) + "s";

    /// <summary>A tag for the attribution stage: this call's <c>bursar.*</c> property, else the ambient scope, else the client's default.</summary>
    internal string? Tag(string header, AdditionalPropertiesDictionary? props, bool background)
    {
        if (header == DeferralStage.Header) return background ? DeferTag(props) : null; // only a caller that allowed background responses waits for a batch
        var (tag, property, fallback) = header switch
        {
            AttributionResolver.FeatureHeader => ("feature", PropertyPrefix + "feature", _options.Feature),
            AttributionResolver.TeamHeader => ("team", PropertyPrefix + "team", _options.Team),
            AttributionResolver.CustomerHeader => ("customer", PropertyPrefix + "customer", _options.Customer),
            AttributionResolver.TaskHeader => ("task", PropertyPrefix + "task", _options.Task),
            AttributionResolver.TemplateHeader => ("template", PropertyPrefix + "template", _options.Template),
            AttributionResolver.RunHeader => ("run", PropertyPrefix + "run", null),
            _ => (null, null, null),
        };
        if (tag is null) return null;
        if (props is not null && props.TryGetValue(property!, out var v) && v?.ToString() is { } value) return value;
        return BursarScope.Tag(tag) ?? fallback;
    }
}
