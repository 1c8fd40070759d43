"""A company's accounting data as Codat has read it: accounts, suppliers, customers and the rest.

Sync for Expenses shows these as the customer's choices (`mappingOptions`, `/data/suppliers`,
`/data/customers`). Every company gets the same small ledger, with ids of its own, so a test can
tell one company's choices from another's.
"""

import uuid
from dataclasses import dataclass, field

from processor.sandbox.errors import Json

# (name, nominal code, account type, fully qualified category, is a bank account)
ACCOUNTS = (
    ("Business Current Account", "090", "Asset", "Asset.Current", True),
    ("Company Card", "091", "Liability", "Liability.Current", True),
    ("Travel", "720", "Expense", "Expense.Overhead", False),
    ("Meals and Entertainment", "730", "Expense", "Expense.Overhead", False),
    ("Office Supplies", "740", "Expense", "Expense.Overhead", False),
)
SUPPLIERS = ("Card Expenses Supplier", "Northern Rail", "Office Depot")
CUSTOMERS = ("Card Expenses Customer", "Sawayn Group Retail")
TAX_RATES = (("20% (VAT on Expenses)", "INPUT2", 20.0), ("No VAT", "NONE", 0.0))


@dataclass
class AccountingData:
    """What the stand-in answers once a company's data is read."""

    accounts: list[Json] = field(default_factory=list)
    tracking_categories: list[Json] = field(default_factory=list)
    tax_rates: list[Json] = field(default_factory=list)
    suppliers: list[Json] = field(default_factory=list)
    customers: list[Json] = field(default_factory=list)

    def bank_account_ids(self) -> list[str]:
        return [account["id"] for account in self.accounts if account["isBankAccount"]]


def accounting_data(company_id: str, currency: str = "GBP") -> AccountingData:
    """The ledger of one company; ids are stable per company, so a restart gives the same."""

    def new_id(kind: str, name: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"codat-sandbox:{company_id}:{kind}:{name}"))

    accounts = [
        {
            "id": new_id("account", name),
            "nominalCode": code,
            "name": name,
            "currency": currency,
            "accountType": account_type,
            "fullyQualifiedCategory": category,
            "isBankAccount": is_bank,
            "validTransactionTypes": ["Payment", "Refund"] if is_bank else ["Payment"],
            "validFor": ["expense-transactions.Payment", "expense-transactions.Refund"],
        }
        for name, code, account_type, category, is_bank in ACCOUNTS
    ]
    departments = new_id("tracking", "Departments")
    tracking = [
        {"id": departments, "name": "Departments", "hasChildren": True, "parentId": None},
        {"id": new_id("tracking", "Sales"), "name": "Sales", "hasChildren": False,
         "parentId": departments},
    ]  # fmt: skip
    tax_rates = [
        {
            "id": new_id("taxRate", code),
            "name": name,
            "code": code,
            "effectiveTaxRate": rate,
            "totalTaxRate": rate,
            "validTransactionTypes": ["Payment", "Refund"],
        }
        for name, code, rate in TAX_RATES
    ]
    suppliers = [_contact("supplierName", new_id("supplier", n), n, currency) for n in SUPPLIERS]
    customers = [_contact("customerName", new_id("customer", n), n, currency) for n in CUSTOMERS]
    return AccountingData(accounts, tracking, tax_rates, suppliers, customers)


def _contact(name_field: str, contact_id: str, name: str, currency: str) -> Json:
    return {
        "id": contact_id,
        name_field: name,
        "contactName": None,
        "emailAddress": None,
        "phone": None,
        "addresses": [],
        "registrationNumber": None,
        "taxNumber": None,
        "status": "Active",
        "defaultCurrency": currency,
        "metadata": {"isDeleted": False},
        "modifiedDate": "2024-03-01T10:00:00Z",
        "sourceModifiedDate": "2024-03-01T10:00:00Z",
    }
