using Bursar.Core.Budgets;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Limits;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Core.Routing;

namespace Bursar.Core.Storage;

/// <summary>Prices imported from a price file (<c>bursar prices import</c>); they override the built-in catalog.</summary>
public interface IPriceStore
{
    /// <summary>Stores imported prices, replacing earlier imports of the same model; returns how many were stored.</summary>
    int ImportPrices(IEnumerable<ModelPrice> prices, DateTimeOffset when);

    IReadOnlyList<ModelPrice> LoadImportedPrices();
}

/// <summary>
/// One storage backend: every store the gateway, the .NET library and the CLI use (the embedded SQLite file by default,
/// PostgreSQL for several gateway instances). Chosen by <c>Bursar:Store</c>.
/// </summary>
public interface IBursarStore : ILedgerStore, IKeyStore, IBudgetStore, IRateLimitStore, IRouteStore, IReportStore, IPriceStore
{
    /// <summary>Where the data lives, for people: a file path or a PostgreSQL host and database (never a password).</summary>
    string Location { get; }

    /// <summary>Deletes hourly rollups past their retention; returns the rows removed.</summary>
    int PruneHourlyRollups();
}
