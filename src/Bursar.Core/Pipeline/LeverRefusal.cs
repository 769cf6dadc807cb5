namespace Bursar.Core.Pipeline;

/// <summary>Who is to blame when a call does not go through: the caller's request, a policy, the upstream, or Bursar itself.</summary>
public enum Blame { Caller, Policy, Upstream, Gateway }

/// <summary>
/// A stage's "no" as a value: the status a provider would use, a message that says what to fix, and who is to blame.
/// Each face renders it its own way: the gateway as the caller's dialect's error body, the .NET library as a typed
/// exception (<c>BudgetExceededException</c>, <c>RateLimitedException</c>, <c>RunLimitExceededException</c>).
/// </summary>
public sealed record LeverRefusal(int Status, string Message, Blame Blame = Blame.Caller)
{
    /// <summary>The field the refusal is about (OpenAI <c>param</c>).</summary>
    public string? Param { get; init; }
    /// <summary>A machine-readable code: <c>model_not_found</c>, <c>budget_exceeded</c>, <c>rate_limit_exceeded</c>, <c>run_limit_exceeded</c>, <c>unpriced_model</c>.</summary>
    public string? Code { get; init; }
    /// <summary>The error type both dialects keep (Bursar's own policy types); null derives it from the status.</summary>
    public string? Type { get; init; }
    /// <summary>Seconds until the limit involved lets the call through (a <c>retry-after</c> header).</summary>
    public int? RetryAfterSeconds { get; init; }

    public static LeverRefusal BadRequest(string message, string? param = null) => new(400, message) { Param = param };
    public static LeverRefusal Forbidden(string message) => new(403, message);
    public static LeverRefusal ModelNotFound(string message) => new(404, message) { Param = "model", Code = "model_not_found" };

    /// <summary>The ledger outcome of a call that ended with this refusal.</summary>
    public string Outcome => Blame switch { Blame.Policy => "refused", Blame.Upstream => "upstream_error", Blame.Gateway => "gateway_error", _ => "client_error" };
}
