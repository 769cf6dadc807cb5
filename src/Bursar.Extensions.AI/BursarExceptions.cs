using Bursar.Core.Pipeline;

namespace Bursar.Extensions.AI;

/// <summary>
/// A call Bursar refused before any money was spent (before the first streamed update): the refusal says which
/// limit, key or field, and <see cref="RetryAfter"/> when waiting helps. The specific kinds are
/// <see cref="BudgetExceededException"/>, <see cref="RateLimitedException"/> and <see cref="RunLimitExceededException"/>.
/// </summary>
public class BursarRefusedException(LeverRefusal refusal) : InvalidOperationException(refusal.Message)
{
    /// <summary>The stage's refusal: status, code (<c>budget_exceeded</c>, <c>rate_limit_exceeded</c>, <c>run_limit_exceeded</c>, <c>model_not_found</c>, ...), message.</summary>
    public LeverRefusal Refusal { get; } = refusal;

    public TimeSpan? RetryAfter => Refusal.RetryAfterSeconds is { } s ? TimeSpan.FromSeconds(s) : null;

    /// <summary>The most specific exception for a refusal.</summary>
    public static BursarRefusedException For(LeverRefusal refusal) => (refusal.Type ?? refusal.Code) switch
    {
        "budget_exceeded" => new BudgetExceededException(refusal),
        "run_limit_exceeded" => new RunLimitExceededException(refusal),
        "rate_limit_exceeded" => new RateLimitedException(refusal),
        _ => new BursarRefusedException(refusal),
    };
}

/// <summary>A budget (named in the message, with its limit, the spend so far and when it resets) would be exceeded by the call's worst case.</summary>
public sealed class BudgetExceededException(LeverRefusal refusal) : BursarRefusedException(refusal);

/// <summary>A rate limit (requests or tokens per minute of a key, team or customer) is used up; see <see cref="BursarRefusedException.RetryAfter"/>.</summary>
public sealed class RateLimitedException(LeverRefusal refusal) : BursarRefusedException(refusal);

/// <summary>The run (agent loop) reached a cap (turns, tool calls, spend) or its done-condition; start a new run id to continue.</summary>
public sealed class RunLimitExceededException(LeverRefusal refusal) : BursarRefusedException(refusal);
