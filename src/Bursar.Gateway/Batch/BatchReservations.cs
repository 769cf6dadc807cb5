using System.Collections.Concurrent;
using Bursar.Core.Batch;
using Bursar.Core.Budgets;
using Bursar.Core.Pricing;

namespace Bursar.Gateway.Batch;

/// <summary>
/// Budget holds of batches in flight, one per line: a batch is admitted whole or refused whole (its worst case at the
/// batch rate must fit every budget that applies), and each line's hold is replaced by its actual cost when its result
/// arrives. Holds live in memory: after a restart a line's cost is charged without one (budget counters are re-seeded
/// from the ledger, the source of truth).
/// </summary>
public sealed class BatchReservations(BudgetManager budgets, PriceCatalog catalog)
{
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<string, BudgetReservation>> _held = new(StringComparer.Ordinal);

    public BudgetSubject Subject(BatchState b, string? model) =>
        new(b.KeyId, b.Team, b.Customer, b.Feature, model is null ? null : catalog.Find(model).Price?.Model ?? model);

    /// <summary>
    /// Holds every line's worst case, or nothing: the refusal names the budget the whole batch would cross (or, with
    /// shared counters that cannot be reached, says so in <see cref="BudgetRefusal.Unavailable"/>).
    /// </summary>
    public async Task<BudgetRefusal?> TryReserveAsync(BatchState batch, IReadOnlyList<ManifestLine> lines, CancellationToken cancellationToken)
    {
        if (!budgets.Any) return null;
        // the whole batch first, per model (a model-scoped budget sees only its lines): refused whole, naming the budget
        foreach (var group in lines.GroupBy(l => l.Model))
        {
            var total = group.Sum(l => l.WorstUsd);
            var check = await budgets.TryReserveAsync(Subject(batch, group.Key), total, cancellationToken).ConfigureAwait(false);
            if (!check.Held) return check.Refusal;
            budgets.Release(check.Reservation);
        }
        var held = new ConcurrentDictionary<string, BudgetReservation>(StringComparer.Ordinal);
        foreach (var l in lines)
        {
            var d = await budgets.TryReserveAsync(Subject(batch, l.Model), l.WorstUsd, cancellationToken).ConfigureAwait(false);
            if (!d.Held)
            {
                foreach (var h in held.Values) budgets.Release(h); // another call took the room in between: nothing stays held
                return d.Refusal;
            }
            held[l.CustomId] = d.Reservation;
        }
        _held[batch.Id] = held;
        return null;
    }

    /// <summary>Replaces the line's hold by its cost (charged without a hold when there is none: after a restart).</summary>
    public void Settle(BatchState batch, string customId, string? model, decimal cost)
    {
        if (_held.TryGetValue(batch.Id, out var held) && held.TryRemove(customId, out var r)) budgets.Settle(r, cost);
        else budgets.Charge(Subject(batch, model), cost);
    }

    /// <summary>Lets go of whatever the batch still holds (it was refused upstream, or every line is settled).</summary>
    public void Release(string batchId)
    {
        if (!_held.TryRemove(batchId, out var held)) return;
        foreach (var r in held.Values) budgets.Release(r);
    }

    public decimal Held(string batchId) => _held.TryGetValue(batchId, out var h) ? h.Values.Sum(r => r.Amount) : 0m;
}
