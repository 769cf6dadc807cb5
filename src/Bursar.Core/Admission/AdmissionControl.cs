using System.Globalization;
using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Limits;
using Bursar.Core.Pricing;
using Bursar.Core.Runs;
using Bursar.Core.Pipeline;

namespace Bursar.Core.Admission;

/// <summary>What admission decided for one call: the model to serve, the money held, the run it belongs to (a value: admitting a call allocates no decision).</summary>
public readonly record struct AdmissionDecision
{
    private readonly BudgetReservation? _reservation;

    /// <summary>Nothing admitted: no model chosen, nothing held.</summary>
    public static AdmissionDecision None => default;

    public string? Model { get; init; }
    public BudgetReservation Reservation { get => _reservation ?? BudgetReservation.None; init => _reservation = value; }
    public decimal WorstCaseUsd { get; init; }
    public string? RoutingReason { get; init; }
    public string? RunId { get; init; }
    public string? KeyId { get; init; }
    /// <summary>The run's hold was taken in this process although run state is shared (it was unreachable and the policy counts locally).</summary>
    public bool RunLocal { get; init; }
}

/// <summary>
/// The checks before a call reaches the provider, in order: rate limits (requests and tokens per minute), run caps,
/// then budgets: the worst-case cost (estimated input at the served model's input rate plus the output limit at its
/// output rate) is reserved atomically against every budget that applies, or the key's downgrade model is tried, or the
/// call is refused with the budget, its limit, the spend so far and the reset time.
/// </summary>
public sealed class AdmissionControl(BudgetManager budgets, RateLimiter limiter, RunTracker runs, PriceCatalog catalog, IServedModels served, Bursar.Core.Tokens.TokenCounter tokens, TimeProvider time)
{
    /// <summary>Output limit assumed for an OpenAI call that sets none and a model whose maximum is unknown.</summary>
    public const long DefaultMaxOutputTokens = 4_096;

    public RunTracker Runs => runs;

    /// <param name="estimatedInputTokens">The one-pass estimate (rate limits count it).</param>
    /// <param name="inputTokenBound">Input tokens the call cannot exceed (budgets and run caps reserve it).</param>
    /// <param name="choices">Completions generated and billed (<c>n</c>, <c>best_of</c>): the output limit is reserved once per completion.</param>
    public AdmissionDecision Admit(VirtualKey key, CallAttribution a, string model, long estimatedInputTokens, long inputTokenBound, long? maxTokens, int choices, out LeverRefusal? refusal)
    {
        var pending = AdmitAsync(key, a, model, estimatedInputTokens, inputTokenBound, maxTokens, choices, CancellationToken.None);
        (var decision, refusal) = pending.IsCompletedSuccessfully ? pending.Result : pending.AsTask().GetAwaiter().GetResult();
        return decision;
    }

    /// <summary>
    /// Admits the call or refuses it (rate limits, run caps, budgets). In process it completes at once; with shared
    /// counters (rate-limit cells, run state, budgets) each step is one round trip to their store.
    /// </summary>
    /// <param name="spare">A settled reservation of an earlier call the caller reuses its state from: the budget hold is written into it instead of a new one (see <see cref="BudgetManager.TryReserveAsync"/>).</param>
    public ValueTask<(AdmissionDecision Decision, LeverRefusal? Refusal)> AdmitAsync(VirtualKey key, CallAttribution a, string model, long estimatedInputTokens, long inputTokenBound, long? maxTokens, int choices, CancellationToken cancellationToken, BudgetReservation? spare = null)
    {
        var price = catalog.Find(model).Price;
        choices = Math.Max(1, choices);
        var output = maxTokens ?? price?.MaxOutputTokens ?? DefaultMaxOutputTokens;
        var bound = InputBound(model, price, inputTokenBound);
        var worst = WorstCase(price, bound, output * choices);
        var ask = new Ask(key, a, model, price, bound, maxTokens, output, choices, worst, spare);

        if (limiter.Any)
        {
            var limited = limiter.TryAcquireAsync(key.Id, a.Team, a.Customer, estimatedInputTokens + output * choices, cancellationToken);
            if (!limited.IsCompletedSuccessfully) return AfterRateLimitAsync(limited, ask, cancellationToken);
            if (RateRefusal(limited.Result) is { } refused) return ValueTask.FromResult((AdmissionDecision.None, (LeverRefusal?)refused));
        }
        return AdmitRun(ask, cancellationToken);
    }

    /// <summary>What one call asks admission for, carried from step to step.</summary>
    private readonly record struct Ask(VirtualKey Key, CallAttribution A, string Model, ModelPrice? Price, long Bound, long? MaxTokens, long Output, int Choices, decimal Worst, BudgetReservation? Spare);

    private async ValueTask<(AdmissionDecision, LeverRefusal?)> AfterRateLimitAsync(ValueTask<RateLimitDecision> limited, Ask ask, CancellationToken cancellationToken)
    {
        if (RateRefusal(await limited.ConfigureAwait(false)) is { } refused) return (AdmissionDecision.None, refused);
        return await AdmitRun(ask, cancellationToken).ConfigureAwait(false);
    }

    private static LeverRefusal? RateRefusal(RateLimitDecision d)
    {
        if (d.Unavailable is { } down)
            return new LeverRefusal(503, down, Blame.Gateway) { Type = "rate_limit_store_unavailable", Code = "rate_limit_store_unavailable", RetryAfterSeconds = 5 };
        if (d.Refusal is { } rl)
            return new LeverRefusal(429, rl.Message, Blame.Policy) { RetryAfterSeconds = (int)Math.Ceiling(rl.RetryAfter.TotalSeconds), Code = "rate_limit_exceeded" };
        return null;
    }

    private static LeverRefusal? RunRefusal(RunStart s)
    {
        if (s.Unavailable is { } down)
            return new LeverRefusal(503, down, Blame.Gateway) { Type = "run_store_unavailable", Code = "run_store_unavailable", RetryAfterSeconds = 5 };
        return s.Refusal is { } rr ? Bursar.Core.Runs.RunRefusals.ToRefusal(rr) : null;
    }

    private ValueTask<(AdmissionDecision, LeverRefusal?)> AdmitRun(Ask ask, CancellationToken cancellationToken)
    {
        if (ask.A.RunId is not { } runId) return AdmitBudgets(ask, runLocal: false, cancellationToken);
        var started = runs.TryStartAsync(ask.Key.Id, runId, ask.Worst, cancellationToken);
        if (!started.IsCompletedSuccessfully) return AfterRunAsync(started, ask, cancellationToken);
        if (RunRefusal(started.Result) is { } refused) return ValueTask.FromResult((AdmissionDecision.None, (LeverRefusal?)refused));
        return AdmitBudgets(ask, started.Result.Local, cancellationToken);
    }

    private async ValueTask<(AdmissionDecision, LeverRefusal?)> AfterRunAsync(ValueTask<RunStart> started, Ask ask, CancellationToken cancellationToken)
    {
        var s = await started.ConfigureAwait(false);
        if (RunRefusal(s) is { } refused) return (AdmissionDecision.None, refused);
        return await AdmitBudgets(ask, s.Local, cancellationToken).ConfigureAwait(false);
    }

    private ValueTask<(AdmissionDecision, LeverRefusal?)> AdmitBudgets(Ask ask, bool runLocal, CancellationToken cancellationToken)
    {
        var (key, a, model) = (ask.Key, ask.A, ask.Model);
        if (!budgets.Any)
            return ValueTask.FromResult((new AdmissionDecision { Model = model, RunId = a.RunId, KeyId = key.Id, WorstCaseUsd = ask.Worst, RunLocal = runLocal }, (LeverRefusal?)null));

        var admitted = AdmitBudgetsAsync(key, a, model, ask.Price, ask.Bound, ask.MaxTokens, ask.Output, ask.Choices, ask.Worst, ask.Spare, cancellationToken);
        if (admitted.IsCompletedSuccessfully)
        {
            var done = admitted.Result;
            if (done.Refusal is not null && a.RunId is not null) runs.Release(key.Id, a.RunId, ask.Worst, runLocal); // refused: the run's hold goes back
            return ValueTask.FromResult(WithRunLocal(done, runLocal));
        }
        return ReleaseIfRefusedAsync(admitted, key.Id, a.RunId, ask.Worst, runLocal);
    }

    private static (AdmissionDecision, LeverRefusal?) WithRunLocal((AdmissionDecision Decision, LeverRefusal? Refusal) done, bool runLocal) =>
        runLocal && done.Refusal is null ? (done.Decision with { RunLocal = true }, null) : done;

    private async ValueTask<(AdmissionDecision, LeverRefusal?)> ReleaseIfRefusedAsync(ValueTask<(AdmissionDecision Decision, LeverRefusal? Refusal)> admitted, string keyId, string? runId, decimal worst, bool runLocal)
    {
        (AdmissionDecision Decision, LeverRefusal? Refusal) done;
        try
        {
            done = await admitted.ConfigureAwait(false);
        }
        catch
        {
            if (runId is not null) runs.Release(keyId, runId, worst, runLocal);
            throw;
        }
        if (done.Refusal is not null && runId is not null) runs.Release(keyId, runId, worst, runLocal);
        return WithRunLocal(done, runLocal);
    }

    private async ValueTask<(AdmissionDecision Decision, LeverRefusal? Refusal)> AdmitBudgetsAsync(VirtualKey key, CallAttribution a, string model, ModelPrice? price, long bound, long? maxTokens, long output, int choices, decimal worst, BudgetReservation? spare, CancellationToken cancellationToken)
    {
        if (price is null && key.UnpricedPolicy == "refuse")
        {
            return (AdmissionDecision.None, new LeverRefusal(403, $"Model '{model}' has no price, and key {key.Prefix}…'s policy refuses unpriced models while budgets apply. Add its price (bursar prices import, or Bursar:Prices) or use a priced model.", Blame.Policy) { Type = "unpriced_model", Code = "unpriced_model", Param = "model" });
        }
        // a free (local) model never consumes budget; an unpriced one allowed by policy is flagged in the ledger, not reserved
        if (price is null || price.IsFree)
            return (new AdmissionDecision { Model = model, RunId = a.RunId, KeyId = key.Id, WorstCaseUsd = 0 }, null);

        var subject = new BudgetSubject(key.Id, a.Team, a.Customer, a.Feature, price.Model);
        var first = await budgets.TryReserveAsync(subject, worst, cancellationToken, spare).ConfigureAwait(false);
        if (first.Held)
            return (new AdmissionDecision { Model = model, Reservation = first.Reservation, WorstCaseUsd = worst, RunId = a.RunId, KeyId = key.Id }, null);

        var br = first.Refusal!;
        if (br.Unavailable is { } down)
        {
            // the budgets could not be checked: refused for that (the caller may retry), never admitted uncounted
            return (AdmissionDecision.None, new LeverRefusal(503, down, Blame.Gateway) { Type = "budget_store_unavailable", Code = "budget_store_unavailable", RetryAfterSeconds = 5 });
        }
        if (key.DowngradeModel is { } cheaper && !string.Equals(cheaper, model, StringComparison.OrdinalIgnoreCase)
            && served.Serves(cheaper) && catalog.Find(cheaper).Price is { } cheaperPrice)
        {
            var worstCheaper = WorstCase(cheaperPrice, InputBound(cheaper, cheaperPrice, bound), (maxTokens ?? cheaperPrice.MaxOutputTokens ?? DefaultMaxOutputTokens) * choices);
            var second = await budgets.TryReserveAsync(subject with { Model = cheaperPrice.Model }, worstCheaper, cancellationToken, spare).ConfigureAwait(false);
            if (second.Held)
            {
                return (new AdmissionDecision
                {
                    Model = cheaper, Reservation = second.Reservation, WorstCaseUsd = worstCheaper, RunId = a.RunId, KeyId = key.Id,
                    RoutingReason = $"budget_downgrade: {br.Budget.Describe()} ({br.Budget.Id}) would be exceeded on {model}",
                }, null);
            }
        }
        var secs = br.ResetsAt == DateTimeOffset.MaxValue ? (int?)null : (int)Math.Max(1, Math.Ceiling((br.ResetsAt - time.GetUtcNow()).TotalSeconds));
        return (AdmissionDecision.None, new LeverRefusal(429, br.Message + $" (budget id '{br.Budget.Id}')", Blame.Policy) { Type = "budget_exceeded", Code = "budget_exceeded", RetryAfterSeconds = secs });
    }

    /// <summary>
    /// The input tokens to reserve: the request's byte bound (scaled by the Claude token factor for Claude models,
    /// whose tokenizer Bursar does not have), never more than the model's context window (a longer prompt is refused by
    /// the provider, unbilled).
    /// </summary>
    public long InputBound(string model, ModelPrice? price, long inputTokenBound)
    {
        var bound = Bursar.Core.Tokens.TokenCounter.IsClaude(model) && tokens.ClaudeFactor > 1
            ? (long)Math.Ceiling(inputTokenBound * tokens.ClaudeFactor) : inputTokenBound;
        return price?.ContextWindow is { } window && window > 0 ? Math.Min(bound, window) : bound;
    }

    /// <summary>
    /// The most a call can cost: every input token at the dearest input class it could bill as (uncached input, or a
    /// 5-minute or 1-hour cache write) in the long-context tier its size reaches, and every output token at the output
    /// or reasoning rate, whichever is higher.
    /// </summary>
    public static decimal WorstCase(ModelPrice? price, long inputTokens, long outputTokens)
    {
        if (price is null) return 0m;
        var r = price.RatesFor(inputTokens, batch: false);
        var input = Math.Max(r.Input, Math.Max(r.CacheWrite5m ?? 0, r.CacheWrite1h ?? 0));
        return (inputTokens * input + outputTokens * Math.Max(r.Output, r.Reasoning ?? 0)) / 1_000_000m;
    }

    /// <summary>Lets go of what admission held for a call that will not run now (deferred to a batch): its budget hold, its run's hold.</summary>
    public void Release(AdmissionDecision admission)
    {
        budgets.Release(admission.Reservation);
        if (admission.RunId is not null && admission.KeyId is not null) runs.Release(admission.KeyId, admission.RunId, admission.WorstCaseUsd, admission.RunLocal);
    }

    /// <summary>Settles the reservation to the call's actual cost and advances its run; returns why the run ended, if it did.</summary>
    public string? Complete(AdmissionDecision admission, LedgerRecord record, int toolCalls, string? text)
    {
        var pending = CompleteAsync(admission, record, toolCalls, text);
        return pending.IsCompletedSuccessfully ? pending.Result : pending.AsTask().GetAwaiter().GetResult();
    }

    /// <summary>Settles the reservation (off the caller's path) and advances the run: at once in process, one round trip with shared run state.</summary>
    public ValueTask<string?> CompleteAsync(AdmissionDecision admission, LedgerRecord record, int toolCalls, string? text)
    {
        var cost = record.Cost ?? 0m;
        budgets.Settle(admission.Reservation, cost);
        if (admission.RunId is null || record.Outcome is "refused") return ValueTask.FromResult<string?>(null);
        return runs.CompleteAsync(admission.KeyId, admission.RunId, new RunTurn(toolCalls, cost, record.FinishReason, text), admission.WorstCaseUsd, admission.RunLocal);
    }
}
