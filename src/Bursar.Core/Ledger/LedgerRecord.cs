using System.Text.Json.Serialization;
using Bursar.Core.Usage;

namespace Bursar.Core.Ledger;

/// <summary>
/// One ledger record: every call leaves exactly one, success or failure, streamed or not.
/// <see cref="Cost"/> is null when the served model has no price (<see cref="Priced"/> false): unpriced is never $0.
/// </summary>
public sealed record LedgerRecord
{
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)] // required: written even at its default, so a journal line always reads back
    public required string Id { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)] // required: written even at its default, so a journal line always reads back
    public required DateTimeOffset Timestamp { get; init; }

    // who
    public string? KeyId { get; init; }
    public string? Team { get; init; }
    public string? Customer { get; init; }

    // what for
    public string? Feature { get; init; }
    public string? Route { get; init; }
    public string? Task { get; init; }
    public string? Template { get; init; }
    public string? RunId { get; init; }

    // how
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)] // required: written even at its default, so a journal line always reads back
    public required string Dialect { get; init; }
    public string? Provider { get; init; }
    public string? RequestedModel { get; init; }
    public string? ServedModel { get; init; }
    /// <summary>Why the served model differs from the requested one (e.g. <c>budget_downgrade: customer 'acme' month budget</c>).</summary>
    public string? RoutingReason { get; init; }
    /// <summary>Set on the call that ended its run: the cap or done-condition that ended it.</summary>
    public string? RunEndReason { get; init; }
    /// <summary>Set when the prompt's prefix changes between calls only in volatile values (timestamps, ids), which defeats prompt caching.</summary>
    public string? VolatilePrefix { get; init; }
    /// <summary>Hash of the prompt's stable prefix (system text) for prompts of 1,024+ tokens: calls sharing it could share a prompt cache.</summary>
    public string? PrefixHash { get; init; }
    /// <summary>Tokens in that prefix.</summary>
    public long PrefixTokens { get; init; }
    public bool Streamed { get; init; }
    public bool Batch { get; init; }
    /// <summary>For a line of a provider batch: Bursar's id of the batch (<c>batch_…</c>, <c>msgbatch_…</c>) or deferred job's batch.</summary>
    public string? BatchId { get; init; }
    /// <summary>For a line of a provider batch: the caller's <c>custom_id</c> of that line.</summary>
    public string? CustomId { get; init; }

    // tokens
    public long InputTokens { get; init; }
    public long CacheReadTokens { get; init; }
    public long CacheWrite5mTokens { get; init; }
    public long CacheWrite1hTokens { get; init; }
    public long OutputTokens { get; init; }
    public long ReasoningTokens { get; init; }
    /// <summary>
    /// The provider's usage never arrived (a stream cut off, a body Bursar could not read): the tokens are Bursar's
    /// estimate (input from the request before the call, output counted from what was streamed), and so is the cost.
    /// </summary>
    public bool UsageEstimated { get; init; }

    // money (USD)
    public bool Priced { get; init; }
    public decimal? Cost { get; init; }
    /// <summary>What the call would have cost without Bursar: <see cref="Cost"/> plus every lever's saving.</summary>
    public decimal? CounterfactualCost { get; init; }
    public decimal SavingRouting { get; init; }
    public decimal SavingResponseCache { get; init; }
    public decimal SavingPromptCache { get; init; }
    public decimal SavingBatch { get; init; }
    public decimal SavingCompaction { get; init; }
    public decimal SavingOutputCap { get; init; }
    /// <summary>Input tokens the context lever removed from this call (document compression and compaction).</summary>
    public long ContextTokensRemoved { get; init; }
    /// <summary>What removed them: <c>compress</c>, a compaction strategy (<c>prune-tool-results</c>, <c>sliding-window</c>), or both joined by <c>+</c>.</summary>
    public string? ContextStrategy { get; init; }
    /// <summary>For imported call logs: the cost the source log reported (the ledger's <see cref="Cost"/> is always the catalog's).</summary>
    public decimal? ReportedCost { get; init; }

    // timing and outcome
    public double LatencyMs { get; init; }
    public double? TimeToFirstTokenMs { get; init; }
    /// <summary>ok, client_error, upstream_error, canceled, refused.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.Never)] // required: written even at its default, so a journal line always reads back
    public required string Outcome { get; init; }
    public int StatusCode { get; init; }
    public string? ErrorType { get; init; }
    public string? ErrorMessage { get; init; }
    public string? FinishReason { get; init; }
    public string? UpstreamRequestId { get; init; }

    [JsonIgnore]
    public TokenUsage Usage => new(InputTokens, CacheReadTokens, CacheWrite5mTokens, CacheWrite1hTokens, OutputTokens, ReasoningTokens);
}

/// <remarks>The journal's line format: a field at its default (null, 0, false) is left out and reads back as that default.</remarks>
[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingDefault, PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(LedgerRecord))]
public sealed partial class LedgerJsonContext : JsonSerializerContext;
