using Bursar.Core.Admission;
using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Keys;
using Bursar.Core.Metering;
using Bursar.Core.Routing;

namespace Bursar.Core.Pipeline;

/// <summary>
/// One model call as the lever pipeline sees it, whatever face it came through: who is calling, the provider-neutral
/// view of the request (<see cref="Request"/>), what each stage decided (route, model, caps, edits, admission), how it
/// ended, and what metering learned. The face fills in what it knows (the gateway from HTTP, the .NET library from
/// <c>ChatOptions</c>); <see cref="CallMeter"/> turns it into the call's one ledger record.
/// </summary>
/// <remarks>
/// A call is valid until the face's call returns (as an ASP.NET Core <c>HttpContext</c> is until its request ends): a
/// face may reuse it for its next call (<see cref="Restart"/>), so a stage that needs something after the call ends
/// copies it, never keeps the <see cref="LeverCall"/>.
/// </remarks>
public sealed class LeverCall
{
    private string _id = "";
    private DateTimeOffset _started;
    private long _startTimestamp;
    private string _dialect = "";

    public required string Id { get => _id; init => _id = value; }
    public required DateTimeOffset Started { get => _started; init => _started = value; }
    public required long StartTimestamp { get => _startTimestamp; init => _startTimestamp = value; }
    /// <summary>The wire format the caller used, as the ledger names it (<c>openai</c>, <c>anthropic</c>).</summary>
    public required string Dialect { get => _dialect; init => _dialect = value; }

    /// <summary>
    /// Makes this object a new call, every property as a new <see cref="LeverCall"/> has it (a face that pools its
    /// calls does this once the previous call has returned).
    /// </summary>
    public void Restart(string id, DateTimeOffset started, long startTimestamp, string dialect)
    {
        (_id, _started, _startTimestamp, _dialect) = (id, started, startTimestamp, dialect);
        Key = VirtualKey.Anonymous;
        Tags = NoTags;
        Request = CallRequest.Empty;
        Edits.Clear();
        Host = null;
        Attribution = CallAttribution.None;
        Routes = null;
        Policy = null;
        Model = "";
        OutputCap = null;
        MaxTokens = null;
        Refusal = null;
        CacheHit = null;
        SemanticHit = false;
        Similarity = 0;
        CaptureAnswer = false;
        Answer = null;
        CacheStatus = null;
        RequestedModel = null;
        Provider = null;
        Streamed = false;
        Summary.Reset();
        StatusCode = 0;
        Outcome = "ok";
        ErrorType = null;
        ErrorMessage = null;
        UpstreamRequestId = null;
        RoutingReason = null;
        Route = null;
        RoutedFrom = null;
        Prefix = null;
        PromptCachePlaced = false;
        VolatilePrefix = null;
        Context = null;
        Admitted = AdmissionDecision.None;
        Sealed = false;
        DeferredJob = null;
        EstimatedInputTokens = 0;
        Rehearsal = false;
        Pipeline = null;
    }

    private static readonly Func<string, string?> NoTags = static _ => null;

    /// <summary>The caller's virtual key (the .NET library's in-process key when it has none).</summary>
    public VirtualKey Key { get; set; } = VirtualKey.Anonymous;
    /// <summary>The caller's <c>x-bursar-*</c> tag values by header name (the library reads its scope and <c>ChatOptions</c>).</summary>
    public Func<string, string?> Tags { get; set; } = NoTags;
    /// <summary>The request as stages read it; edits go to <see cref="Edits"/>, never into it.</summary>
    public CallRequest Request { get; set; } = CallRequest.Empty;
    /// <summary>Changes the stages asked for, applied by the face to what goes upstream (same-dialect bytes stay untouched when empty).</summary>
    public RequestEdits Edits { get; } = new();
    /// <summary>The face's own state for its provider call (the gateway's HTTP context, the library's inner client call).</summary>
    public object? Host { get; set; }

    public CallAttribution Attribution { get; set; } = CallAttribution.None;
    /// <summary>The route table this call was matched against (one snapshot per call).</summary>
    public RoutingOptions? Routes { get; set; }
    /// <summary>The route policy that matched this call (null: none; the levers' own defaults apply).</summary>
    public RoutePolicy? Policy { get; set; }
    /// <summary>The model to serve: the one asked for until routing or admission chooses another.</summary>
    public string Model { get; set; } = "";
    /// <summary>The route's output cap (fixed or learned) when one applies.</summary>
    public int? OutputCap { get; set; }
    /// <summary>The output limit after caps (null: the caller set none and no cap applies).</summary>
    public long? MaxTokens { get; set; }

    /// <summary>Set by a stage that ends the call before the provider: the face answers with it.</summary>
    public LeverRefusal? Refusal { get; set; }
    /// <summary>Set when a response cache answered: the call cost nothing and saved what the original cost.</summary>
    public CachedResponse? CacheHit { get; set; }
    /// <summary>The semantic cache answered (with <see cref="Similarity"/>), not the exact one.</summary>
    public bool SemanticHit { get; set; }
    public double Similarity { get; set; }
    /// <summary>A cache stage will store this call's answer: the face keeps a copy of what the caller got in <see cref="Answer"/>.</summary>
    public bool CaptureAnswer { get; set; }
    /// <summary>What the caller got, when <see cref="CaptureAnswer"/> was set and the call succeeded.</summary>
    public (byte[] Body, string ContentType)? Answer { get; set; }
    /// <summary>What the caches told the caller (<c>hit</c>, <c>semantic-hit</c>, <c>miss</c>, <c>bypass</c>); null when no cache stage ran.</summary>
    public string? CacheStatus { get; set; }

    public string? RequestedModel { get; set; }
    public string? Provider { get; set; }
    public bool Streamed { get; set; }
    public CallSummary Summary { get; } = new();
    public int StatusCode { get; set; }
    public string Outcome { get; set; } = "ok";
    public string? ErrorType { get; set; }
    public string? ErrorMessage { get; set; }
    public string? UpstreamRequestId { get; set; }
    public string? RoutingReason { get; set; }
    /// <summary>The route policy that matched this call, by name.</summary>
    public string? Route { get; set; }
    /// <summary>Set when a route served another model than the one asked for: the routing saving is priced against it.</summary>
    public string? RoutedFrom { get; set; }
    public (string Hash, long Tokens)? Prefix { get; set; }
    /// <summary>Bursar placed the prompt-cache breakpoints of this call (the caller had none): the net caching saving is Bursar's.</summary>
    public bool PromptCachePlaced { get; set; }
    public string? VolatilePrefix { get; set; }
    /// <summary>What the context lever did (documents compressed, the compaction applied, tokens removed); null when it did nothing.</summary>
    public Context.ContextReport? Context { get; set; }
    /// <summary>What admission decided (the reservation to settle, the run to advance).</summary>
    public AdmissionDecision Admitted { get; set; } = AdmissionDecision.None;
    /// <summary>
    /// The budget reservation of the last call this object served, kept across <see cref="Restart"/> on purpose: once
    /// settled, admission writes the next call's hold into it instead of a new object (a live one is never reused).
    /// </summary>
    public Budgets.BudgetReservation? SpareReservation { get; set; }
    /// <summary>The ledger record is written: set once, before the call's last byte reaches the caller.</summary>
    public bool Sealed { get; set; }
    /// <summary>
    /// Set by the batch stage when the call was queued as a deferred job (its id): the face answers 202, and the call leaves no ledger
    /// record of its own; the job's one record is written when its answer arrives.
    /// </summary>
    public string? DeferredJob { get; set; }
    /// <summary>The request's input tokens estimated before the call: billed when the provider's usage never arrives.</summary>
    public long EstimatedInputTokens { get; set; }
    /// <summary>
    /// A warm-up call the gateway sends itself before it says ready: it skips the lever stages (no budget, rate limit,
    /// cache, route or learner sees it), is answered by a Simulator of its own, and settles without a ledger record or a
    /// metric. Only the face that made it sets this.
    /// </summary>
    public bool Rehearsal { get; set; }

    internal LeverPipeline? Pipeline { get; set; }

    /// <summary>
    /// Settles the call once: prices it, settles its budget reservation, advances its run and appends its ledger
    /// record. The face calls it just before the caller gets the call's last byte (or when the call ends without one).
    /// </summary>
    public ValueTask SealAsync() => Sealed || Pipeline is null ? ValueTask.CompletedTask : Pipeline.SettleAsync(this);

    /// <summary>Ends the call with <paramref name="refusal"/> (a stage's short circuit).</summary>
    public void Refuse(LeverRefusal refusal, string? outcome = null)
    {
        Refusal = refusal;
        Outcome = outcome ?? refusal.Outcome;
        StatusCode = refusal.Status;
        ErrorType = refusal.Type ?? refusal.Code;
        ErrorMessage = refusal.Message;
    }
}
