"""The same models corrected as `runbook orm-check` says: each ondelete as the database has it after
the plan, and every relationship into a cascading FK leaves the work to the database."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, ForeignKeyConstraint, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(Text, unique=True)
    referred_by: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="SET NULL"))
    profile: Mapped["UserProfile"] = relationship(back_populates="user", cascade="all, delete-orphan",
                                                  passive_deletes=True)
    lab_reports: Mapped[list["LabReport"]] = relationship(back_populates="user", cascade="all, delete-orphan",
                                                           passive_deletes=True)
    vitals: Mapped[list["Vital"]] = relationship(back_populates="user", cascade="all, delete-orphan",
                                                 passive_deletes=True)
    dietary_restrictions: Mapped[list["UserDietaryRestriction"]] = relationship(cascade="all, delete-orphan",
                                                                             passive_deletes=True)
    nutrition_goals: Mapped[list["NutritionGoal"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class UserProfile(Base):
    __tablename__ = "user_profiles"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    timezone: Mapped[str] = mapped_column(Text, default="UTC")
    user: Mapped[User] = relationship(back_populates="profile")


class LabReport(Base):
    __tablename__ = "lab_reports"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    reported_on: Mapped[dt.date]
    user: Mapped[User] = relationship(back_populates="lab_reports")
    results: Mapped[list["LabReportCategorized"]] = relationship(cascade="all, delete-orphan",
                                                                 passive_deletes=True)


class LabReportCategorized(Base):
    __tablename__ = "lab_report_categorized"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lab_report_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("lab_reports.id", ondelete="CASCADE"), index=True)
    test_name: Mapped[str] = mapped_column(String(64))


class Vital(Base):
    __tablename__ = "vitals"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    value: Mapped[int] = mapped_column(Integer)
    user: Mapped[User] = relationship(back_populates="vitals")
    categorized: Mapped[list["VitalCategorized"]] = relationship(cascade="save-update, merge", passive_deletes=True)


class VitalCategorized(Base):
    """Owned by its user; the reading it was derived from may be gone (SET NULL)."""
    __tablename__ = "vitals_categorized"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    vital_id: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("vitals.id", ondelete="SET NULL"), index=True)
    category: Mapped[str] = mapped_column(String(32))


class UserDietaryRestriction(Base):
    __tablename__ = "user_dietary_restrictions"
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    restriction: Mapped[str] = mapped_column(String(64), primary_key=True)


class NutritionGoal(Base):
    __tablename__ = "nutrition_goals"
    __table_args__ = (UniqueConstraint("user_id", "id"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    targets: Mapped[list["NutritionGoalTarget"]] = relationship(cascade="all, delete-orphan",
                                                                 passive_deletes=True)


class NutritionGoalTarget(Base):
    __tablename__ = "nutrition_goal_targets"
    __table_args__ = (ForeignKeyConstraint(["user_id", "goal_id"], ["nutrition_goals.user_id", "nutrition_goals.id"],
                                           name="nutrition_goal_targets_goal_fkey", ondelete="CASCADE"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    goal_id: Mapped[int] = mapped_column(BigInteger)
    nutrient: Mapped[str] = mapped_column(String(32))
