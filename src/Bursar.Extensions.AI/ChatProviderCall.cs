using System.Buffers;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Bursar.Core.Pipeline;
using Bursar.Core.Routing;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>The library's side of one call (<see cref="LeverCall.Host"/>): the inner client and what the caller passed.</summary>
internal sealed class ChatExchange
{
    public IChatClient Inner { get; set; } = null!;
    /// <summary>The inner clients for other models (<see cref="BursarChatClientOptions.ModelClients"/>).</summary>
    public BursarChatClientOptions ClientOptions { get; set; } = null!;
    public IList<ChatMessage> Messages { get; set; } = Array.Empty<ChatMessage>();
    public ChatOptions? Options { get; set; }
    public string Provider { get; set; } = "";
    /// <summary>Streamed updates go to the caller through this channel (null: a whole answer).</summary>
    public ChannelWriter<ChatResponseUpdate>? Updates { get; set; }
    public ChatResponse? Response { get; set; }
    /// <summary>The inner client's task that gave <see cref="Response"/> (the caller gets that task back).</summary>
    public Task<ChatResponse>? ResponseTask { get; set; }

    /// <summary>Lets go of the last call's objects (a reused slot).</summary>
    public void Clear()
    {
        (Inner, ClientOptions, Messages, Options, Provider, Updates) = (null!, null!, Array.Empty<ChatMessage>(), null, "", null);
        (Response, ResponseTask) = (null, null);
    }
}

/// <summary>
/// One call's reusable state: the lever call, the library's exchange, the request body, and the delegates bound to
/// them once. A whole (not streamed) call that ends well gives its slot back when it returns, and the next call on that
/// thread reuses it, so a call allocates little beyond its ledger record (see <see cref="LeverCall"/>'s remarks).
/// </summary>
internal sealed class CallSlot
{
    /// <summary>A body larger than this is not kept for the next call.</summary>
    private const int MaxKeptBody = 64 * 1024;

    [ThreadStatic] private static CallSlot? t_free;

    public CallSlot()
    {
        Call = new LeverCall { Id = "", Started = default, StartTimestamp = 0, Dialect = BursarChatClient.DialectName };
        Request = new CallRequest(Parse) { Model = "" };
        Tags = header => Client!.Tag(header, Properties, Background);
    }

    public LeverCall Call { get; }
    public ChatExchange Exchange { get; } = new();
    /// <summary>The call written as its OpenAI body (what the stages scan, hash and parse).</summary>
    public ArrayBufferWriter<byte> Body { get; } = new(1024);
    public CallRequest Request { get; }
    public Func<string, string?> Tags { get; }
    public BursarChatClient? Client { get; set; }
    public AdditionalPropertiesDictionary? Properties { get; set; }
    /// <summary>The caller allowed a background response (<c>ChatOptions.AllowBackgroundResponses</c>): the call may be deferred to a batch.</summary>
    public bool Background { get; set; }

    private JsonObject Parse() => (JsonObject)JsonNode.Parse(Body.WrittenSpan)!;

    public static CallSlot Rent()
    {
        var slot = t_free;
        if (slot is null) return new CallSlot();
        t_free = null;
        return slot;
    }

    /// <summary>The call has returned: the slot is free for the next one.</summary>
    public void Return()
    {
        if (Body.Capacity > MaxKeptBody) return; // a huge call does not keep its buffer
        (Client, Properties, Background) = (null, null, false);
        Exchange.Clear();
        Body.ResetWrittenCount();
        t_free = this;
    }
}

/// <summary>
/// The library's provider call, the pipeline's last step: the inner <see cref="IChatClient"/> with the model the
/// stages chose and their edits applied to a copy of the caller's <see cref="ChatOptions"/>. A streamed answer is
/// passed on one update behind, so the call's ledger record is journaled before the caller gets the last update.
/// </summary>
internal sealed class ChatProviderCall(TimeProvider time, Bursar.Core.Pricing.PriceCatalog catalog) : IProviderCall
{
    public ValueTask CallAsync(LeverCall call, CancellationToken cancellationToken)
    {
        var x = (ChatExchange)call.Host!;
        // no fallbacks: the one model (no chain to build)
        return call.Policy is { Fallbacks.Length: > 0 } ? CallChainAsync(call, x, cancellationToken) : CallOnceAsync(call, x, call.Model, cancellationToken);
    }

    private async ValueTask CallChainAsync(LeverCall call, ChatExchange x, CancellationToken cancellationToken)
    {
        // the chosen model, then the route's fallbacks (any model has a client here: a listed one or the wrapped one)
        var (models, skipped) = FallbackChain.For(call, catalog, static _ => true);
        List<string>? failures = null;
        var (reason, routedFrom) = (call.RoutingReason, call.RoutedFrom);
        for (var attempt = 0; ; attempt++)
        {
            var model = models[attempt];
            // the ledger record is sealed inside the attempt: it says why this model serves the call before it is written
            (call.RoutingReason, call.RoutedFrom) = (reason, routedFrom);
            if (failures is not null || skipped.Count > 0) FallbackChain.Explain(call, model, failures ?? [], skipped);
            try
            {
                await CallOnceAsync(call, x, model, cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (attempt + 1 < models.Count && !call.Summary.Answered && !(e is OperationCanceledException && cancellationToken.IsCancellationRequested))
            {
                // the model failed before answering anything: the next model of the route's chain
                (failures ??= []).Add($"{model}: {(StatusOf(e) is { } status ? status.ToString(System.Globalization.CultureInfo.InvariantCulture) : e.GetType().Name)}");
            }
        }
    }

    private async ValueTask CallOnceAsync(LeverCall call, ChatExchange x, string model, CancellationToken cancellationToken)
    {
        var inner = x.ClientOptions.ClientFor(model) ?? x.Inner;
        call.Provider = ReferenceEquals(inner, x.Inner) ? x.Provider : (inner.GetService(typeof(ChatClientMetadata)) as ChatClientMetadata)?.ProviderName ?? x.Provider;
        // the inner client serves the model as it is asked: ModelId already names it, or names none and the model is the wrapped client's default
        var asked = x.Options?.ModelId == model || (x.Options?.ModelId is null && model == call.Request.Model && ReferenceEquals(inner, x.Inner));
        var options = InnerOptions(x.Options, model, reuse: asked && !call.Edits.Any);
        IEnumerable<ChatMessage> messages = x.Messages;
        if (call.Edits.Any)
        {
            var anthropic = AnthropicCacheControl.IsAnthropic(inner);
            var edit = new ChatCallEdit([.. x.Messages], options!, anthropic ? AnthropicCacheControl.Mark : null);
            call.Edits.ApplyTo(edit, new EditTarget(anthropic, model, call, cancellationToken));
            messages = edit.Messages;
        }
        if (x.Updates is null)
        {
            var pending = inner.GetResponseAsync(messages, options, cancellationToken);
            var response = await pending.ConfigureAwait(false);
            ChatMetering.Read(call, response);
            if (call.CaptureAnswer) call.Answer = (ChatJson.Serialize(response), "application/json");
            await call.SealAsync().ConfigureAwait(false);
            (x.Response, x.ResponseTask) = (response, pending);
            return;
        }
        ChatResponseUpdate? held = null;
        var kept = call.CaptureAnswer ? new List<ChatResponseUpdate>() : null;
        await foreach (var update in inner.GetStreamingResponseAsync(messages, options, cancellationToken).ConfigureAwait(false))
        {
            ChatMetering.Observe(call, update, time);
            kept?.Add(update);
            if (held is not null) await x.Updates.WriteAsync(held, cancellationToken).ConfigureAwait(false);
            held = update;
        }
        if (kept is not null && call.Summary.FinishReason is not null) call.Answer = (ChatJson.Serialize(kept.ToChatResponse()), "application/json");
        await call.SealAsync().ConfigureAwait(false);
        if (held is not null) await x.Updates.WriteAsync(held, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The HTTP status an SDK's exception carries (<c>Status</c> of System.ClientModel's, <c>StatusCode</c> of others), if any.</summary>
    private static int? StatusOf(Exception e)
    {
        if (e is HttpRequestException { StatusCode: { } code }) return (int)code;
        var p = e.GetType().GetProperty("Status") ?? e.GetType().GetProperty("StatusCode");
        return p?.GetValue(e) switch { int i => i, System.Net.HttpStatusCode c => (int)c, _ => null };
    }

    /// <summary>
    /// The options for the inner client: the caller's own when nothing needs to change (same model, no edits, no
    /// <c>bursar.*</c> properties); else a copy with the model, without Bursar's properties (never sent to a provider).
    /// </summary>
    private static ChatOptions? InnerOptions(ChatOptions? options, string model, bool reuse)
    {
        if (reuse && (options is null || !HasBursarProperties(options))) return options;
        var copy = options?.Clone() ?? new ChatOptions();
        copy.ModelId = model;
        if (copy.AdditionalProperties is { Count: > 0 } props && props.Keys.Any(k => k.StartsWith(BursarChatClient.PropertyPrefix, StringComparison.Ordinal)))
        {
            var kept = new AdditionalPropertiesDictionary();
            foreach (var (k, v) in props) if (!k.StartsWith(BursarChatClient.PropertyPrefix, StringComparison.Ordinal)) kept[k] = v;
            copy.AdditionalProperties = kept.Count > 0 ? kept : null;
        }
        return copy;
    }

    private static bool HasBursarProperties(ChatOptions options)
    {
        if (options.AdditionalProperties is not { Count: > 0 } props) return false;
        foreach (var k in props.Keys) if (k.StartsWith(BursarChatClient.PropertyPrefix, StringComparison.Ordinal)) return true;
        return false;
    }
}

/// <summary>
/// Prompt-cache breakpoints for the Anthropic SDK's chat client, which reads them from a content's
/// <c>anthropic:cache_control</c> property (its <c>WithCacheControl</c>), created here without a compile-time
/// dependency on the Anthropic package.
/// </summary>
internal static class AnthropicCacheControl
{
    private const string Property = "anthropic:cache_control";
    private static readonly Type? Ephemeral = Type.GetType("Anthropic.Models.Messages.CacheControlEphemeral, Anthropic", throwOnError: false);

    public static bool IsAnthropic(IChatClient client) =>
        Ephemeral is not null && (client.GetService(typeof(ChatClientMetadata)) as ChatClientMetadata)?.ProviderName == "anthropic";

    /// <summary>
    /// A copy of a text, tool-call or tool-result content with a 5-minute breakpoint (the SDK writes each as a block's
    /// <c>cache_control</c>); any other content (an empty text, an image) as it is.
    /// </summary>
    public static AIContent Mark(AIContent content)
    {
        if (Ephemeral is null) return content;
        AIContent? copy = content switch
        {
            TextContent { Text.Length: > 0 } t => new TextContent(t.Text),
            FunctionCallContent f => new FunctionCallContent(f.CallId, f.Name, f.Arguments) { Exception = f.Exception, InformationalOnly = f.InformationalOnly },
            FunctionResultContent r => new FunctionResultContent(r.CallId, r.Result) { Exception = r.Exception },
            _ => null,
        };
        if (copy is null) return content;
        var props = content.AdditionalProperties is { } p ? new AdditionalPropertiesDictionary(p) : [];
        props[Property] = Activator.CreateInstance(Ephemeral);
        copy.AdditionalProperties = props;
        copy.Annotations = content.Annotations;
        copy.RawRepresentation = content.RawRepresentation;
        return copy;
    }
}

/// <summary>How a cached .NET answer is kept: the <see cref="ChatResponse"/> as JSON.</summary>
internal static class ChatJson
{
    public static byte[] Serialize(ChatResponse response) => JsonSerializer.SerializeToUtf8Bytes(response, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(ChatResponse)));

    public static ChatResponse Deserialize(byte[] body) => (ChatResponse)JsonSerializer.Deserialize(body, AIJsonUtilities.DefaultOptions.GetTypeInfo(typeof(ChatResponse)))!;
}
